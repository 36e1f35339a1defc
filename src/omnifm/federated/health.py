"""Bank health: does the spectral knowledge carry information? Computed by the server each round.

Everything here reads what the server already has: the bank, the round's spectral uploads
(k-means prototypes with a modality tag), the bank entries each client hit, and the token
spread each client reported with its fit metrics (``omnifm.federated.client.token_spread``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifm.bank import SpectralBank
from omnifm.federated.messages import FitRes
from omnifm.functional import effective_rank

__all__ = ["COLLAPSE_COSINE", "modality_cosines", "retrieval_health", "spread_health"]

COLLAPSE_COSINE = 0.99  # mean cosine across modalities above which tokens count as collapsed


def retrieval_health(bank: SpectralBank, results: Sequence[FitRes]) -> dict[str, float]:
    """What the round's retrievals hit, on the bank the clients retrieved from.

    - ``bank/purity``: share of a client's retrieved entries of its own modality (mean over
      clients); ``bank/purity_chance``: the same for retrieval at random (the share of the
      client's modality among the entries). Purity above chance: retrieval tells modalities
      apart.
    - ``bank/hit_entropy``: entropy of the hits over the entries, divided by ``log(entries)``:
      1 when every entry is retrieved equally, 0 when one entry takes every hit.
    """
    out: dict[str, float] = {}
    purity, chance = [], []
    all_hits = torch.zeros(len(bank), dtype=torch.float64)
    for r in results:
        if r.hit_ids is None or not r.hit_ids.numel() or len(bank) == 0:
            continue
        pos, found = bank.positions(r.hit_ids)
        counts = r.hit_counts[found].double()
        all_hits.index_add_(0, pos, counts)
        own = bank.modalities.index(r.modality) if r.modality in bank.modalities else -1
        if counts.sum() > 0:
            purity.append(float(counts[bank.modality[pos] == own].sum() / counts.sum()))
            chance.append(float((bank.modality == own).double().mean()))
    if purity:
        out["bank/purity"] = sum(purity) / len(purity)
        out["bank/purity_chance"] = sum(chance) / len(chance)
    total = all_hits.sum()
    if total > 0 and len(bank) > 1:
        p = all_hits[all_hits > 0] / total
        out["bank/hit_entropy"] = float(-(p * p.log()).sum()) / math.log(len(bank))
    return out


def modality_cosines(vectors: Tensor, modalities: Sequence[str]) -> tuple[float, float]:
    """Mean cosine of pairs of rows of one modality (distinct rows) and of two modalities.

    NaN where there is no such pair (one row per modality, or a single modality).
    """
    x = F.normalize(vectors.double(), dim=-1)
    sims = x @ x.T
    codes = torch.tensor([sorted(set(modalities)).index(m) for m in modalities])
    same = codes[:, None] == codes[None, :]
    off = ~torch.eye(len(codes), dtype=torch.bool)
    within, across = sims[same & off], sims[~same]
    nan = float("nan")
    return (
        float(within.mean()) if within.numel() else nan,
        float(across.mean()) if across.numel() else nan,
    )


def spread_health(bank: SpectralBank, results: Sequence[FitRes]) -> dict[str, float]:
    """How spread the spectral knowledge is after the round's uploads.

    - ``bank/proto_cos_within``, ``bank/proto_cos_across``: mean cosine of the round's
      uploaded prototypes within one modality and across modalities;
    - ``bank/token_cos_within``: the clients' mean pairwise token cosine (their reports);
    - ``bank/entries``, ``bank/entries/<modality>``, ``bank/erank`` (effective rank of the
      bank's vectors: 1 for a bank of one direction).
    """
    out: dict[str, float] = {"bank/entries": float(len(bank)), "bank/erank": 0.0}
    for code, name in enumerate(bank.modalities):
        out[f"bank/entries/{name}"] = float((bank.modality == code).sum())
    if len(bank):
        out["bank/erank"] = effective_rank(bank.vectors)
    uploads = [r for r in results if r.prototypes is not None and r.prototypes.numel()]
    if uploads:
        vectors = torch.cat([r.prototypes for r in uploads])
        tags = [r.modality for r in uploads for _ in range(len(r.prototypes))]
        out["bank/proto_cos_within"], out["bank/proto_cos_across"] = modality_cosines(vectors, tags)
    reported = [
        r.metrics["spectral/cos_within"] for r in results if "spectral/cos_within" in r.metrics
    ]
    if reported:
        out["bank/token_cos_within"] = sum(reported) / len(reported)
    return out
