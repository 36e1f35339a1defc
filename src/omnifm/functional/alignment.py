"""The SPAlign loss and cosine top-k retrieval."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_topk", "spalign_loss"]


def spalign_loss(s: Tensor, retrieved: Tensor) -> Tensor:
    """``||s - mean(retrieved)||^2`` per example, averaged over the batch.

    ``s`` is ``(B, d)``, ``retrieved`` is ``(B, k, d)``. With ``k == 0`` (empty bank) the loss
    is zero and still part of the graph.
    """
    if retrieved.shape[1] == 0:
        return s.sum() * 0.0
    centroid = retrieved.to(s.dtype).mean(dim=1)
    return (s - centroid).pow(2).sum(dim=-1).mean()


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
