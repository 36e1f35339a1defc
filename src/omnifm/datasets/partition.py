"""Splitting one source's examples among several sites (clients): whole, IID or Dirichlet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = [
    "Partition",
    "PartitionKind",
    "derive_seed",
    "dirichlet_split",
    "iid_split",
    "split_indices",
]

PartitionKind = Literal["whole", "iid", "dirichlet"]
DIRICHLET_ATTEMPTS = 10


@dataclass
class Partition:
    """How one source is split into sites.

    kind: "whole" (one site gets everything), "iid" (uniform random) or "dirichlet"
        (per-class site proportions drawn from Dir(alpha): label skew).
    sites: number of clients the source is split into.
    alpha: Dirichlet concentration; smaller is more skewed. Only for kind="dirichlet".
    min_samples: every site must get at least this many examples in every split.
    """

    kind: PartitionKind = "whole"
    sites: int = 1
    alpha: float = 0.5
    min_samples: int = 2

    def __post_init__(self) -> None:
        if self.kind not in get_args(PartitionKind):
            raise ValueError(
                f"unknown partition kind {self.kind!r}; use one of {list(get_args(PartitionKind))}"
            )
        if self.sites < 1:
            raise ValueError(f"partition sites must be >= 1, got {self.sites}")
        if self.kind == "whole" and self.sites != 1:
            raise ValueError(
                f"partition kind 'whole' keeps one site but sites={self.sites}; "
                "use kind 'iid' or 'dirichlet' to split a source into several sites"
            )
        if self.alpha <= 0:
            raise ValueError(f"partition alpha must be > 0, got {self.alpha}")
        if self.min_samples < 0:
            raise ValueError(f"partition min_samples must be >= 0, got {self.min_samples}")


def derive_seed(*keys: int) -> int:
    """A deterministic 32-bit seed from non-negative integer keys."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _check_sites(sites: int) -> None:
    if sites < 1:
        raise ValueError(f"sites must be >= 1, got {sites}")


def iid_split(n: int, sites: int, seed: int) -> list[np.ndarray]:
    """Split range(n) uniformly at random into `sites` sorted, disjoint, covering parts whose
    sizes differ by at most one."""
    _check_sites(sites)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, sites)]


def dirichlet_split(labels: np.ndarray, sites: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Split example indices among `sites` with each class's site proportions drawn from
    Dir(alpha): sorted, disjoint, covering parts."""
    _check_sites(sites)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(sites)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(sites, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for site, chunk in enumerate(np.split(members, cuts)):
            parts[site].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def split_indices(
    partition: Partition, labels: np.ndarray, seed: int, what: str
) -> list[np.ndarray]:
    """Indices of each site for one split of one source; `what` names them in errors.

    A Dirichlet draw that leaves a site below `min_samples` is retried with seeds derived from
    `seed` (the first try uses `seed` itself) before raising.
    """
    labels = np.asarray(labels).reshape(-1)
    if partition.kind == "whole":
        parts = [np.arange(len(labels))]
    elif partition.kind == "iid":
        parts = iid_split(len(labels), partition.sites, seed)
    else:
        for attempt in range(DIRICHLET_ATTEMPTS):
            draw_seed = seed if attempt == 0 else derive_seed(seed, attempt)
            parts = dirichlet_split(labels, partition.sites, partition.alpha, draw_seed)
            if min(len(p) for p in parts) >= partition.min_samples:
                break
    sizes = [len(p) for p in parts]
    smallest = int(np.argmin(sizes))
    if sizes[smallest] < partition.min_samples:
        tries = f" after {DIRICHLET_ATTEMPTS} draws" if partition.kind == "dirichlet" else ""
        fixes = "fewer sites, a larger alpha" if partition.kind == "dirichlet" else "fewer sites"
        raise ValueError(
            f"{what}: site {smallest} gets {sizes[smallest]} example"
            f"{'' if sizes[smallest] == 1 else 's'}{tries}, fewer than "
            f"min_samples={partition.min_samples}; use {fixes} or a smaller min_samples"
        )
    return parts
