"""Aggregation math for federated strategies, and k-means for spectral prototypes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["kmeans", "proximal_term", "weighted_average"]


def weighted_average(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Weighted mean of state dicts with equal keys (FedAvg's rule).

    Floating tensors are accumulated in place in (at least) float32, which keeps aggregation
    cheap for large models; integer tensors (BatchNorm's ``num_batches_tracked``) are averaged
    in float64 and rounded.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {list(weights)}")
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"state {i} has keys {sorted(set(state) ^ keys)} that state 0 lacks")
    out = {}
    for key, ref in states[0].items():
        dtype = torch.promote_types(ref.dtype, torch.float32) if ref.is_floating_point() else None
        acc = torch.zeros(ref.shape, dtype=dtype or torch.float64)
        for state, weight in zip(states, weights, strict=True):
            acc.add_(state[key], alpha=weight / total)
        out[key] = (acc if ref.is_floating_point() else acc.round()).to(ref.dtype)
    return out


def proximal_term(params: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> Tensor:
    """``sum ||w - w_ref||^2`` over the named parameters (FedProx's client term, without mu/2)."""
    terms = [(params[k] - reference[k].to(params[k])).pow(2).sum() for k in reference]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0) -> Tensor:
    """Cosine k-means centroids (unit norm) of the rows of ``x``; ``min(k, len(x))`` of them.

    A few lines of Lloyd's algorithm with k-means++ seeding, so the upload of a client's
    spectral prototypes needs no extra dependency (scikit-learn) on hospital machines.
    """
    x = torch.nn.functional.normalize(x.float(), dim=-1)
    n = x.shape[0]
    k = min(k, n)
    if k == 0:
        return x[:0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    centroids = x[torch.randint(n, (1,), generator=g)]
    while centroids.shape[0] < k:
        dist = (1 - x @ centroids.T).min(dim=1).values.clamp_min(0)
        probs = dist / dist.sum() if dist.sum() > 0 else torch.full((n,), 1.0 / n)
        centroids = torch.cat([centroids, x[torch.multinomial(probs.cpu(), 1, generator=g)]])
    for _ in range(iters):
        assign = (x @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = torch.bincount(assign, minlength=k) > 0
        centroids = torch.where(
            filled[:, None], torch.nn.functional.normalize(sums, dim=-1), centroids
        )
    return centroids
