"""The server: global shared state, the spectral bank, the strategy and the client sampler."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from omnifm.bank import SpectralBank
from omnifm.federated.aggregators import Aggregator
from omnifm.federated.callbacks import cpu_copy
from omnifm.federated.checkpoint import check_fits
from omnifm.federated.health import retrieval_health, spread_health
from omnifm.federated.messages import FitIns, FitRes
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.strategies import Strategy
from omnifm.federated.trainer import client_seed
from omnifm.tasks.base import OmniFMTask

__all__ = ["Server"]


class Server:
    """Holds what the federation shares; turns client results into the next global state."""

    def __init__(
        self,
        model: OmniFMTask,
        strategy: Strategy,
        sampler: ClientSampler,
        bank: SpectralBank | None = None,
        seed: int = 0,
        prototypes_per_client: int = 8,
        aggregator: Aggregator | None = None,
    ) -> None:
        self.strategy = strategy
        self.aggregator = aggregator
        strategy.bind(model, len(sampler.clients))
        self.sampler = sampler
        self.bank = bank
        self.seed = seed
        self.prototypes_per_client = prototypes_per_client
        self.personal_keys = strategy.personal_keys(model)
        state = cpu_copy(model.state_dict())
        self.initial_personal = {k: state[k] for k in self.personal_keys}
        self.shared = {k: v for k, v in state.items() if k not in self.personal_keys}
        self.health: dict[str, float] = {}  # bank health after the latest aggregation

    def bank_snapshot(self) -> dict[str, Any] | None:
        """The bank as clients receive it (``BankSnapshot`` state); ``None`` without a bank."""
        return self.bank.snapshot().state_dict() if self.bank is not None else None

    def fit_ins(self, round_: int, client: str) -> FitIns:
        return FitIns(
            round=round_,
            weights=self.shared,
            seed=client_seed(self.seed, round_, client),
            bank=self.bank_snapshot(),
            prototypes=self.prototypes_per_client if self.bank is not None else 0,
            strategy=self.strategy.broadcast(),
        )

    def aggregate(self, round_: int, results: list[FitRes]) -> None:
        """New shared weights from the round's successful results; then refresh the bank."""
        if not results:
            raise ValueError(f"round {round_}: no results to aggregate")
        self.shared = self.strategy.aggregate(
            [r.weights for r in results],
            [r.num_examples for r in results],
            self.shared,
            self.aggregator,
            [r.strategy for r in results],
        )
        if self.bank is None:
            return
        # hits refer to the round's snapshot: read and count them before updating
        self.health = retrieval_health(self.bank, results)
        for r in results:
            if r.hit_ids is not None and r.hit_ids.numel():
                self.bank.record_hits(r.hit_ids.repeat_interleave(r.hit_counts))
        for r in results:
            self.upload(r.client, r.modality, r.prototypes, round_)
        self.health.update(spread_health(self.bank, results))

    def upload(self, client: str, modality: str, prototypes: Tensor | None, round_: int) -> None:
        """Replace ``client``'s entries in the bank (warm-up and every fit)."""
        if self.bank is not None and prototypes is not None and prototypes.numel():
            self.bank.update(client, modality, prototypes, round_)

    def state_dict(self) -> dict[str, Any]:
        return {
            "shared": self.shared,
            "bank": self.bank.state_dict() if self.bank is not None else None,
            "sampler": self.sampler.state_dict(),
            "strategy": self.strategy.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's server state; ``CheckpointMismatch`` (nothing changed) when
        its shared tensors do not have the keys and shapes of this model and strategy."""
        check_fits(state["shared"], self.shared, "shared state")
        self.shared = state["shared"]
        if self.bank is not None and state["bank"] is not None:
            self.bank.load_state_dict(state["bank"])
        self.sampler.load_state_dict(state["sampler"])
        self.strategy.load_state_dict(state.get("strategy") or {})  # none before 2026-11-28
