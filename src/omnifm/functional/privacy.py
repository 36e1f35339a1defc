"""Differentially private spectral prototypes: one Lloyd step as a Gaussian mechanism."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["PROTOTYPE_SENSITIVITY", "private_centroids"]

# adding or removing one image moves one cluster's clipped sum by at most `clip` and its count
# by 1: in units of (clip, 1) the L2 sensitivity of the (sums, counts) release is sqrt(2)
PROTOTYPE_SENSITIVITY = math.sqrt(2.0)


def private_centroids(
    tokens: Tensor,
    centroids: Tensor,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Centroids of ``tokens`` ``(n, d)`` released with the Gaussian mechanism: one Lloyd step
    from data-independent ``centroids`` ``(k, d)`` (the noisy sums and counts of DP-Lloyd, Su et
    al. 2016, the SuLQ k-means of Blum et al. 2005).

    Each token is scaled to L2 norm ``clip`` (retrieval compares directions), assigned to the
    centroid of highest cosine, and the per-cluster sums get ``N(0, (noise_multiplier *
    clip)^2)`` per coordinate and the counts ``N(0, noise_multiplier^2)``; a centroid is its
    noisy sum over its noisy count (at least 1). One release is the Gaussian mechanism with
    noise multiplier ``noise_multiplier / PROTOTYPE_SENSITIVITY`` for sensitivity 1: what a
    privacy accountant is told.

    >>> x = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]])
    >>> private_centroids(x, torch.eye(2), clip=1.0, noise_multiplier=0.0)[1]
    tensor([0., 1.])
    """
    if clip <= 0 or noise_multiplier < 0:
        raise ValueError(f"need clip > 0 and noise_multiplier >= 0, got {clip}, {noise_multiplier}")
    x = clip * torch.nn.functional.normalize(tokens.double(), dim=1)
    c = torch.nn.functional.normalize(centroids.double(), dim=1)
    assign = (x @ c.T).argmax(dim=1)
    k, d = centroids.shape
    sums = torch.zeros(k, d, dtype=torch.float64).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=k).double()
    sums += noise_multiplier * clip * torch.randn(k, d, generator=generator, dtype=torch.float64)
    counts += noise_multiplier * torch.randn(k, generator=generator, dtype=torch.float64)
    return (sums / counts.clamp(min=1.0)[:, None]).to(tokens.dtype)
