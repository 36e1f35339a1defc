"""How the shared states of a round's clients become one: the mean, or a rule robust to faulty
or hostile sites. Set in a recipe as ``federation.aggregator`` (``Median``, ``TrimmedMean``,
``Krum``); every strategy uses it, and a site's personal parts are never part of it.

The server folds each client's state in as it arrives (``Aggregator.start``): the mean keeps a
running sum, one state's memory for any number of clients; the robust rules need every state
of the round at once, so they hold them until the round ends (``Aggregator.memory`` says how
much; the server refuses a federation whose rounds would exceed
``federation.aggregation_memory`` before round 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from omnifm.functional import coordinate_median, krum_select, trimmed_mean, weighted_average

__all__ = ["Aggregator", "Fold", "Krum", "Mean", "Median", "RunningSum", "TrimmedMean"]

States = Sequence[Mapping[str, Tensor]]


class Fold(Protocol):
    """A round's aggregate in progress: client states added one at a time as they arrive."""

    def add(self, state: Mapping[str, Tensor], weight: float) -> None: ...

    def result(self) -> dict[str, Tensor]: ...


class RunningSum:
    """Weighted sum of state dicts folded in one at a time, in float64, and their total weight:
    the memory of one state (twice its float32 bytes) however many are added. ``result`` is
    their weighted mean, which equals ``weighted_average`` of the same states to float
    tolerance (integer tensors, BatchNorm's ``num_batches_tracked``, rounded as there)."""

    def __init__(self) -> None:
        self.sum: dict[str, Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.total = 0.0
        self.count = 0

    def add(self, state: Mapping[str, Tensor], weight: float = 1.0) -> None:
        if not self.sum:
            self.dtypes = {k: v.dtype for k, v in state.items()}
            self.sum = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in state.items()}
        elif set(state) != set(self.sum):
            raise ValueError(
                f"state {self.count} has keys {sorted(set(state) ^ set(self.sum))} that "
                "state 0 lacks"
            )
        for k, v in state.items():
            self.sum[k].add_(v.detach().cpu(), alpha=weight)
        self.total += weight
        self.count += 1

    def result(self) -> dict[str, Tensor]:
        """The weighted mean of the states added."""
        if self.total <= 0:
            raise ValueError(f"weights must sum to a positive number, got {self.total}")
        return {
            k: (
                s / self.total if self.dtypes[k].is_floating_point else (s / self.total).round()
            ).to(self.dtypes[k])
            for k, s in self.sum.items()
        }


class _Buffered:
    """A robust rule's round: every state held until the round ends, then ``rule`` of them."""

    def __init__(self, rule: Aggregator) -> None:
        self.rule = rule
        self.states: list[Mapping[str, Tensor]] = []
        self.weights: list[int] = []

    def add(self, state: Mapping[str, Tensor], weight: float) -> None:
        self.states.append(state)
        self.weights.append(int(weight))

    def result(self) -> dict[str, Tensor]:
        return self.rule(self.states, self.weights)


class Aggregator:
    """The example-weighted mean (FedAvg's rule); subclasses replace ``__call__``."""

    min_clients = 1  # fewer states a round cannot be aggregated (checked per scope up front)
    streams = True  # folds each state in on arrival; False: holds the round's states

    def start(self) -> Fold:
        """An empty aggregate for one round (the mean streams; robust rules buffer)."""
        return RunningSum() if self.streams else _Buffered(self)

    def memory(self, clients: int, state_bytes: int) -> int:
        """Bytes the server holds while aggregating ``clients`` states of ``state_bytes``."""
        return 2 * state_bytes  # the float64 running sum

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        return weighted_average(states, [float(n) for n in num_examples])

    def __repr__(self) -> str:  # the arguments; a recipe default's lazy wrapper left out
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__.removeprefix('LazyInstance_')}({args})"


class Mean(Aggregator):
    """Example-weighted mean (the default)."""


class Median(Aggregator):
    """Coordinate-wise median (Yin et al. 2018; Flower's ``FedMedian``): unweighted, robust to
    fewer than half the clients sending anything. Holds every state of the round."""

    streams = False

    def memory(self, clients: int, state_bytes: int) -> int:
        return clients * state_bytes  # the states (sorted one tensor at a time)

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        return coordinate_median(states)


class TrimmedMean(Aggregator):
    """Coordinate-wise mean without the ``beta`` share of largest and smallest values (Yin et
    al. 2018; Flower's ``FedTrimmedAvg``, same default). Holds every state of the round."""

    streams = False

    def memory(self, clients: int, state_bytes: int) -> int:
        return clients * state_bytes  # the states (sorted one tensor at a time)

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

    streams = False

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        return self.byzantine + 3

    def memory(self, clients: int, state_bytes: int) -> int:
        # the states, their float64 flattening and the distance matrix
        return 3 * clients * state_bytes + 8 * clients * clients

    def __call__(self, states: States, num_examples: Sequence[int]) -> dict[str, Tensor]:
        chosen = krum_select(states, self.byzantine, min(self.keep, len(states)))
        return weighted_average(
            [states[i] for i in chosen], [float(num_examples[i]) for i in chosen]
        )
