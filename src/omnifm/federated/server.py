"""The server: global shared state, the spectral bank, the strategy and the client sampler."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from omnifm.bank import SpectralBank
from omnifm.federated.aggregators import Aggregator
from omnifm.federated.callbacks import cpu_copy
from omnifm.federated.checkpoint import check_fits
from omnifm.federated.health import retrieval_health, spread_health
from omnifm.federated.layout import ACROSS, Layout
from omnifm.federated.messages import FitIns, FitRes
from omnifm.federated.privacy import PrivacyLedger
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.strategies import Round, Strategy
from omnifm.federated.trainer import client_seed
from omnifm.tasks.base import OmniFMTask
from omnifm.tasks.multitask import MultiTask

__all__ = ["Received", "Server"]


class Server:
    """Holds what the federation shares; turns client results into the next global state.

    Each scope of the ``layout`` (the state every client shares; with many tasks also each
    task's own) is aggregated among its clients by its own copy of the strategy, so server
    state such as FedAdam's moments or SCAFFOLD's ``c`` is kept per scope. ``tasks``: client
    name -> task, for a ``MultiTask`` model.
    """

    def __init__(
        self,
        model: OmniFMTask | MultiTask,
        strategy: Strategy,
        sampler: ClientSampler,
        bank: SpectralBank | None = None,
        seed: int = 0,
        prototypes_per_client: int = 8,
        aggregator: Aggregator | None = None,
        tasks: Mapping[str, str] | None = None,
        aggregation_memory: int | None = None,
        privacy: PrivacyLedger | None = None,
    ) -> None:
        if type(strategy).aggregate is not Strategy.aggregate:
            raise TypeError(
                f"strategy {type(strategy).__name__} overrides aggregate(states, ...), which the "
                "server no longer calls: it folds each client's result in as it arrives. "
                "Override finish(round) instead, reading round.current, round.mean(), "
                "round.upload_mean() and round.state_sum() (README: Add a strategy)"
            )
        self.strategy = strategy
        self.aggregator = aggregator
        self.layout = layout = Layout(model, strategy, tasks if tasks else sampler.clients)
        self.strategies = {  # the first scope (every client's) binds the recipe's instance
            scope.name: strategy if scope.name == ACROSS else copy.deepcopy(strategy)
            for scope in layout.scopes
        }
        need = aggregator.min_clients if aggregator is not None else 1
        small = [s for s in layout.scopes if len(s.clients) < need]
        if small:  # before round 1: with many tasks each task's part has only its clients
            raise ValueError(
                f"federation.aggregator {aggregator} needs {need} clients a round, but "
                + ", ".join(f"scope {s.name!r} has {len(s.clients)}" for s in small)
                + " (with many tasks, each task's own part is aggregated among that task's "
                "clients only); lower its byzantine, or use Median or TrimmedMean"
            )
        for scope in layout.scopes:
            self.strategies[scope.name].bind(
                layout.tasks[scope.task], len(scope.clients), set(scope.keys)
            )
        self.sampler = sampler
        self.bank = bank
        self.seed = seed
        self.prototypes_per_client = prototypes_per_client
        self.privacy = privacy  # each client's spent budget for private uploads
        first = next(iter(layout.tasks))
        self.personal_keys = layout.personal[first]  # of the (first) task
        self.initial_personal = layout.initial_personal(first)
        self.shared = cpu_copy(layout.initial_shared())
        self._check_memory(aggregation_memory)
        self.health: dict[str, float] = {}  # bank health after the latest aggregation

    def aggregation_bytes(self) -> dict[str, int]:
        """Bytes each scope's aggregation holds in a round of ``sampler.per_round`` clients:
        one running sum for the mean, every state for a robust aggregator."""
        rule = self.aggregator or Aggregator()
        return {
            scope.name: rule.memory(
                min(self.sampler.per_round, len(scope.clients)),
                sum(self.shared[scope.prefix + k].nbytes for k in scope.keys),
            )
            for scope in self.layout.scopes
        }

    def _check_memory(self, limit: int | None) -> None:
        """Refuse, before round 1, a robust aggregator whose rounds would hold more than
        ``limit`` bytes of client states."""
        if limit is None or self.aggregator is None or self.aggregator.streams:
            return
        need = sum(self.aggregation_bytes().values())
        if need <= limit:
            return
        per_round = self.sampler.per_round
        raise ValueError(
            f"federation.aggregator {self.aggregator} holds every sampled client's shared state "
            f"until its round ends: {per_round} clients a round need {need / 2**20:,.0f} MiB, "
            f"above federation.aggregation_memory ({limit / 2**20:,.0f} MiB). Lower "
            "federation.participation, raise federation.aggregation_memory if the server has "
            "the memory, or use the streamed Mean"
        )

    def initial_personal_of(self, client: str) -> dict[str, Tensor]:
        """Client ``client``'s personal state before its first round (its task's; the same
        CPU tensors for every client of the task)."""
        return self.layout.initial_personal(self.layout.task(client))

    def bank_snapshot(self) -> dict[str, Any] | None:
        """The bank as clients receive it (``BankSnapshot`` state); ``None`` without a bank."""
        return self.bank.snapshot().state_dict() if self.bank is not None else None

    def broadcast(self) -> dict[str, Tensor]:
        """What the strategy sends every client with the weights, under the shared names."""
        return {
            scope.prefix + k: v
            for scope in self.layout.scopes
            for k, v in self.strategies[scope.name].broadcast().items()
        }

    def fit_ins(self, round_: int, client: str) -> FitIns:
        """Client ``client``'s round: the shared state of its task under its task's names."""
        task = self.layout.task(client)
        return FitIns(
            round=round_,
            weights=self.layout.local(task, self.shared),
            seed=client_seed(self.seed, round_, client),
            bank=self.bank_snapshot(),
            prototypes=self.prototypes_per_client if self.may_upload(client) else 0,
            strategy=self.layout.local(task, self.broadcast()),
        )

    def begin(self, round_: int) -> Received:
        """An empty round: the backend adds each client's result as it arrives."""
        return Received(self, round_)

    def finish(self, received: Received) -> None:
        """New shared weights from the round's folded results; then refresh the bank."""
        round_, results = received.round, received.results
        if not results:
            raise ValueError(f"round {round_}: no results to aggregate")
        for scope in self.layout.scopes:  # each among its own clients of the round
            folded = received.scopes[scope.name]
            if not folded.clients:  # none of this task's clients this round: its state stays
                continue
            new = self.strategies[scope.name].finish(folded)
            self.shared.update({scope.prefix + k: v for k, v in new.items()})
        if self.privacy is not None:
            for r in results:
                self.privacy.record_training(r.client, r.metrics)
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

    def aggregate(self, round_: int, results: list[FitRes]) -> None:
        """``finish`` of a round whose results are all at hand."""
        received = self.begin(round_)
        for r in results:
            received.add(r)
        self.finish(received)

    def may_upload(self, client: str) -> bool:
        """Whether ``client`` is asked for spectral prototypes (a bank, and budget left)."""
        return self.bank is not None and (self.privacy is None or self.privacy.allows(client))

    def may_train(self, client: str) -> bool:
        """Whether ``client`` has DP-SGD budget left for a round like its last."""
        return self.privacy is None or self.privacy.may_train(client)

    def upload(self, client: str, modality: str, prototypes: Tensor | None, round_: int) -> None:
        """Replace ``client``'s entries in the bank (warm-up and every fit)."""
        if self.bank is not None and prototypes is not None and prototypes.numel():
            self.bank.update(client, modality, prototypes, round_)
            if self.privacy is not None:
                self.privacy.record(client)

    def state_dict(self) -> dict[str, Any]:
        return {
            "shared": self.shared,
            "bank": self.bank.state_dict() if self.bank is not None else None,
            "sampler": self.sampler.state_dict(),
            "strategy": self._strategy_state(),
            "privacy": self.privacy.state_dict() if self.privacy is not None else None,
        }

    def _strategy_state(self) -> dict[str, Any]:
        if not self.layout.multi:  # one task: the strategy's own state, as before many tasks
            return self.strategy.state_dict()
        return {"scopes": {name: s.state_dict() for name, s in self.strategies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's server state; ``CheckpointMismatch`` (nothing changed) when
        its shared tensors do not have the keys and shapes of this model and strategy."""
        check_fits(state["shared"], self.shared, "shared state")
        self.shared = state["shared"]
        if self.bank is not None and state["bank"] is not None:
            self.bank.load_state_dict(state["bank"])
        self.sampler.load_state_dict(state["sampler"])
        if self.privacy is not None:  # a run started without privacy has spent nothing
            self.privacy.load_state_dict(state.get("privacy") or {})
        strategy = state.get("strategy") or {}  # none before 2026-11-28
        if not self.layout.multi:
            self.strategy.load_state_dict(strategy)
            return
        for name, s in self.strategies.items():
            s.load_state_dict(strategy["scopes"].get(name, {}))


class Received:
    """A round's client results as they arrive: each one's shared state (and strategy upload)
    is folded into its scopes' aggregates at once and then dropped, so the server holds one
    running aggregate per scope, not a state per client; the small rest (metrics, spectral
    prototypes, bank hits) is kept for the bank. Nothing changes on the server until
    ``Server.finish``, so a round that fails leaves its state as it was."""

    def __init__(self, server: Server, round_: int) -> None:
        self.round = round_
        self.layout = server.layout
        self.scopes: dict[str, Round] = {
            scope.name: server.strategies[scope.name].start(
                {k: server.shared[scope.prefix + k] for k in scope.keys}, server.aggregator
            )
            for scope in server.layout.scopes
        }
        self.results: list[FitRes] = []

    def add(self, res: FitRes) -> None:
        """Fold ``res`` in; its weights and strategy upload are then emptied (released)."""
        for scope in self.layout.scopes:
            if res.client in scope.clients:
                keys = set(scope.keys)
                upload = {k: v for k, v in res.strategy.items() if k in keys}
                weights = {k: res.weights[k] for k in scope.keys}
                self.scopes[scope.name].add(weights, res.num_examples, upload)
        res.weights, res.strategy = {}, {}  # whoever still holds res, not its tensors
        self.results.append(res)

    def __len__(self) -> int:
        return len(self.results)
