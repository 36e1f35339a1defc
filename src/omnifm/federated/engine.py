"""The in-process federation: rounds of sampled clients sharing one model instance."""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from torch import Tensor

from omnifm.federated.checkpoint import check_fits
from omnifm.federated.client import Client
from omnifm.federated.config import FederationConfig
from omnifm.federated.layout import client_tasks
from omnifm.federated.messages import EvaluateRes, FitRes
from omnifm.federated.reporting import ClientLogger
from omnifm.federated.rounds import FederationError, RoundLoop, Stage, Upload
from omnifm.federated.store import ClientStore, pack, unpack
from omnifm.federated.trainer import client_seed, local_trainer, trainer_device
from omnifm.tasks.base import OmniFMTask
from omnifm.tasks.multitask import MultiTask

__all__ = ["Federation", "FederationError"]

log = logging.getLogger("omnifm")


class Federation(RoundLoop):
    """Run federated training of ``model`` over the clients of ``datamodule``.

    Every round: sample clients, fit each with a fresh Lightning ``Trainer`` built from
    ``trainer_kwargs`` (the recipe's ``trainer`` section: local epochs or steps, accelerator,
    precision), aggregate by the strategy, refresh the spectral bank, validate every client,
    log to TensorBoard and checkpoint. ``fit`` ends with a test of every client.

    Example (trains, so not run as a doctest; the README's "Use from Python" has a full one)::

        run = Federation(ClassificationTask(num_classes=4), FederatedDataModule(...))
        results = run.fit()  # list of per-client test metrics plus a "mean" row

    Many tasks: ``model`` a ``MultiTask`` and ``datamodule`` a ``MultiTaskDataModule`` with
    the same task names; each client trains its task's model.
    """

    def __init__(
        self,
        model: OmniFMTask | MultiTask,
        datamodule: Any,
        config: FederationConfig | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        recipe: str | None = None,
    ) -> None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        tasks = client_tasks(model, datamodule)
        super().__init__(model, list(datamodule.client_names()), config, recipe, tasks)
        self.datamodule = datamodule
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.clients = {
            n: Client(
                n,
                datamodule.modality(n),
                datamodule.client_datamodule(n),
                self.server.initial_personal_of(n),
                self.config.bank.privacy,
                self.config.dp_sgd,
            )
            for n in self.client_names
        }
        budget = self.config.client_memory
        self.store = ClientStore(
            None if budget is None else int(budget * 2**20),
            lambda: self._run_dir() / "client_states",
        )

    def make_trainer(self, **overrides: Any) -> Trainer:
        """A fresh per-client Trainer from the recipe's trainer settings."""
        root = str(self.run_dir or self.config.output)
        return local_trainer(self.trainer_kwargs, root, **overrides)

    # the clients, in this process ----------------------------------------------------------
    def model_of(self, client: str) -> OmniFMTask:
        """The model instance client ``client`` loads its state into (its task's)."""
        return self.server.layout.model(client)

    def warmup_uploads(self) -> list[Upload]:
        layout, device = self.server.layout, trainer_device(self.trainer_kwargs)
        for task, model in layout.tasks.items():
            initial = layout.initial_personal(task)
            model.load_state_dict({**layout.local(task, self.server.shared), **initial})
            model.to(device)
        uploads = []
        for name, client in self.clients.items():
            seed = client_seed(self.config.seed, 0, name)
            try:
                model = self.model_of(name)
                protos = client.prototypes(model, self.server.prototypes_per_client, seed)
            except Exception as err:  # the client joins the bank at its first good round
                log.warning(
                    "bank warm-up: client %s left out: %s: %s", name, type(err).__name__, err
                )
                continue
            uploads.append((name, client.modality, protos))
        for model in layout.tasks.values():
            model.cpu()
        return uploads

    def fit_clients(self, round_: int, chosen: list[str]) -> Iterator[tuple[str, FitRes | str]]:
        for i, name in enumerate(chosen, start=1):
            start = time.perf_counter()
            try:
                with self._holding(name) as client:
                    logger = ClientLogger(self._run_dir(), name, client.steps)
                    res = client.fit(
                        self.model_of(name),
                        self.server.fit_ins(round_, name),
                        self.config.strategy,
                        self.make_trainer,
                        logger,
                    )
                    self._keep(client, round_)
            except Exception as err:  # a failing hospital must not stop the federation
                why = f"{type(err).__name__}: {err}"
                log.warning(
                    "  [%d/%d] %s failed and is left out of round %d: %s\n%s",
                    i,
                    len(chosen),
                    name,
                    round_,
                    why,
                    traceback.format_exc(limit=3),
                )
                yield name, why
                continue
            loss = res.metrics.get("train/loss", float("nan"))
            log.info(
                "  [%d/%d] %-16s %-12s loss %.4f  %5.1fs",
                i,
                len(chosen),
                name,
                res.modality,
                loss,
                time.perf_counter() - start,
            )
            yield name, res

    def evaluate_clients(self, stage: Stage) -> list[dict[str, Any]]:
        bank = self.server.bank_snapshot()
        rows: list[dict[str, Any]] = []
        for name, client in self.clients.items():
            try:
                with self._holding(name):
                    res: EvaluateRes = client.evaluate(
                        self.model_of(name),
                        self.server.layout.local(self.server.layout.task(name), self.server.shared),
                        bank,
                        self.make_trainer,
                        stage,
                        self.config.strategy,
                    )
            except Exception as err:  # reported in the table, left out of the mean
                log.warning("%s of client %s failed: %s: %s", stage, name, type(err).__name__, err)
                rows.append({"client": name, "modality": client.modality, "error": str(err)})
                continue
            rows.append({"client": name, "modality": client.modality, **res.metrics})
        return rows

    # client states live here: in the store, held by a Client only while it works ----------
    @contextlib.contextmanager
    def _holding(self, name: str) -> Iterator[Client]:
        """``name``'s Client with its personal and strategy state from the store."""
        client = self.clients[name]
        personal, client.strategy_state = unpack(self.store.get(name) or {})
        client.personal = personal or None
        try:
            yield client
        finally:
            client.personal, client.strategy_state = None, {}

    def _keep(self, client: Client, round_: int) -> None:
        state = pack(client.personal or {}, client.strategy_state)
        if state:
            self.store.put(client.name, state, round_)

    def personal_state(self, name: str) -> dict[str, Tensor] | None:
        """Client ``name``'s personal weights; ``None`` before its first successful round."""
        return unpack(self.store.get(name) or {})[0] or None

    def strategy_state(self, name: str) -> dict[str, Tensor]:
        """What client ``name``'s strategy keeps on it (``LocalRound.state``)."""
        return unpack(self.store.get(name) or {})[1]

    def client_state(self) -> dict[str, Any]:
        return {
            "clients": self.store.state_dict(),
            "steps": {n: c.steps for n, c in self.clients.items()},
        }

    def load_client_state(self, state: dict[str, Any]) -> None:
        if "clients" not in state:  # a checkpoint written before client stores (2026-11-28)
            state = {**state, "clients": {"memory": {}, "files": {}}}
            for name, personal in state["personal"].items():
                state["clients"]["memory"][name] = pack(personal, {})
        for name, flat in state["clients"]["memory"].items():
            personal, _ = unpack(flat)
            initial = self.server.initial_personal_of(name)
            check_fits(personal, initial, f"personal state of {name!r}")
        self.store.load_state_dict(state["clients"])
        for name, client in self.clients.items():
            client.steps = state["steps"].get(name, 0)

    def checkpoint(self) -> Path:
        path = super().checkpoint()
        self.store.collect()  # spilled states the checkpoint no longer needs
        return path
