"""The SPAlign loss and cosine top-k retrieval."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "contrastive_spalign_loss",
    "cosine_topk",
    "effective_rank",
    "spalign_loss",
    "spread_floor_loss",
]


def spalign_loss(s: Tensor, retrieved: Tensor) -> Tensor:
    """The paper's SPAlign: ``||s - mean(retrieved)||^2`` per example, averaged over the batch.

    ``s`` is ``(B, d)``, ``retrieved`` is ``(B, k, d)``. With ``k == 0`` (empty bank) the loss
    is zero and still part of the graph. Its minimum is reached when every ``s`` equals the
    prototypes it was built from: used alone as the tokenizer's signal it collapses the
    tokens to one vector (``contrastive_spalign_loss`` has no such solution).
    """
    if retrieved.shape[1] == 0:
        return s.sum() * 0.0
    centroid = retrieved.to(s.dtype).mean(dim=1)
    return (s - centroid).pow(2).sum(dim=-1).mean()


def contrastive_spalign_loss(
    s: Tensor, candidates: Tensor, positives: int, temperature: float = 0.1
) -> Tensor:
    """SPAlign without a collapsed solution: InfoNCE of ``s`` against bank prototypes.

    ``candidates`` ``(B, n, d)`` are unit-norm prototypes sorted by similarity to ``s`` (what
    retrieval returns), the first ``positives`` of them the retrieved ``S_g``. The loss is
    ``-log sum_{j < positives} e^{s.p_j / t} / sum_j e^{s.p_j / t}``: ``s`` is pulled toward
    its retrieved global prototypes (SPAlign's purpose) and pushed from the other candidates.
    Identical tokens and prototypes give the constant ``log(n / positives)`` and no gradient,
    so collapse is never a minimum. Zero (in the graph) when there is nothing to contrast
    (``n <= positives``).
    """
    if candidates.shape[1] <= positives:
        return s.sum() * 0.0
    logits = torch.einsum("bd,bnd->bn", s, candidates.to(s.dtype)) / temperature
    return (logits.logsumexp(dim=1) - logits[:, :positives].logsumexp(dim=1)).mean()


def spread_floor_loss(s: Tensor, floor: float = 0.5, eps: float = 1e-4) -> Tensor:
    """A floor under the spread of a batch of unit tokens ``s`` ``(B, d)``: VICReg's variance
    hinge, relative to the spread of tokens over the whole sphere (``1 / sqrt(d)`` per
    coordinate): ``mean_j relu(1 - std_j(s) / (floor / sqrt(d)))``, in [0, 1].

    Collapsed tokens give 1 and a gradient that pushes them apart; the contrastive term alone
    has no gradient there, which let a task's gradient walk MedMNIST tokens into collapse
    after 20 rounds. Zero once every coordinate keeps ``floor`` of the sphere's spread, and
    for a batch of one.
    """
    if s.shape[0] < 2:
        return s.sum() * 0.0
    target = floor / s.shape[1] ** 0.5
    std = (s.var(dim=0) + eps).sqrt()
    return torch.relu(1 - std / target).mean()


def effective_rank(x: Tensor) -> float:
    """Effective rank of the rows of ``x`` (Roy and Vetterli 2007): ``exp`` of the entropy of
    the normalised singular values; 1 when every row is the same direction."""
    if x.shape[0] == 0:
        return 0.0
    sv = torch.linalg.svdvals(x.double())
    p = sv / sv.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def cosine_topk(
    queries: Tensor, keys: Tensor, k: int, chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Top-``k`` rows of ``keys`` by cosine similarity to each query.

    ``keys`` must already be L2-normalised. Returns ``(similarities, positions)``, each
    ``(B, min(k, N))``, sorted best first. The bank is scanned in chunks so memory stays at
    ``B x chunk_size`` whatever its size; each chunk is one matrix product plus a partial top-k.
    """
    q = F.normalize(queries.to(keys.dtype), dim=-1)
    n = keys.shape[0]
    k = min(k, n)
    if k == 0:
        empty = q.new_empty(q.shape[0], 0)
        return empty, empty.long()
    # Speed (benchmarks/bank_retrieval.py): 4096-row chunks keep the B x chunk similarity block
    # in cache, and per-chunk top-k candidates are merged by one top-k every chunk_size / k
    # chunks (bounding their memory) instead of a cat + top-k after every chunk.
    cand_sim: list[Tensor] = []
    cand_pos: list[Tensor] = []
    for start in range(0, n, chunk_size):
        sims = q @ keys[start : start + chunk_size].T
        sim, pos = sims.topk(min(k, sims.shape[1]), dim=1)
        cand_sim.append(sim)
        cand_pos.append(pos + start)
        if len(cand_sim) > 1 and (len(cand_sim) * k >= chunk_size or start + chunk_size >= n):
            sims = torch.cat(cand_sim, dim=1)
            sim, order = sims.topk(min(k, sims.shape[1]), dim=1)
            cand_sim, cand_pos = [sim], [torch.cat(cand_pos, dim=1).gather(1, order)]
    return cand_sim[0], cand_pos[0]
