"""How the shared states of a round's clients become one: the mean, or a rule robust to faulty
or hostile sites. Set in a recipe as ``federation.aggregator`` (``Median``, ``TrimmedMean``,
``Krum``); every strategy uses it, and a site's personal parts are never part of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from omnifm.functional import coordinate_median, krum_select, trimmed_mean, weighted_average

__all__ = ["Aggregator", "Krum", "Mean", "Median", "TrimmedMean"]

States = Sequence[Mapping[str, Tensor]]


class Aggregator:
    """The example-weighted mean (FedAvg's rule); subclasses replace ``__call__``."""

    min_clients = 1  # fewer states a round cannot be aggregated (checked per scope up front)

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        return weighted_average(states, [float(n) for n in num_examples])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Mean(Aggregator):
    """Example-weighted mean (the default)."""


class Median(Aggregator):
    """Coordinate-wise median (Yin et al. 2018; Flower's ``FedMedian``): unweighted, robust to
    fewer than half the clients sending anything."""

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        return coordinate_median(states)


class TrimmedMean(Aggregator):
    """Coordinate-wise mean without the ``beta`` share of largest and smallest values (Yin et
    al. 2018; Flower's ``FedTrimmedAvg``, same default)."""

    def __init__(self, beta: float = 0.2) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"TrimmedMean beta must be in [0, 0.5), got {beta}")
        self.beta = beta

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        return trimmed_mean(states, self.beta)


class Krum(Aggregator):
    """(Multi-)Krum (Blanchard et al. 2017): the ``keep`` states closest to their
    ``n - byzantine - 2`` nearest neighbours, example-weighted mean of those (``keep=1``:
    Krum; more: Multi-Krum). A round needs at least ``byzantine + 3`` clients. Memory: every
    state of the round at once, plus an ``n x n`` distance matrix."""

    def __init__(self, byzantine: int = 0, keep: int = 1) -> None:
        if byzantine < 0 or keep < 1:
            raise ValueError(f"Krum needs byzantine >= 0 and keep >= 1, got {byzantine}, {keep}")
        self.byzantine = byzantine
        self.keep = keep

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        return self.byzantine + 3

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        chosen = krum_select(states, self.byzantine, min(self.keep, len(states)))
        return weighted_average(
            [states[i] for i in chosen], [float(num_examples[i]) for i in chosen]
        )
