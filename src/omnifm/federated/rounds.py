"""The round loop every backend shares: sampling, aggregation, the bank, logs, checkpoints.

``RoundLoop`` is the server side of a federation. A backend says only how the clients are
reached: in process (``Federation``) or over Flower (``omnifm.federated.flower``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from omnifm.bank import SpectralBank
from omnifm.federated.checkpoint import (
    LAST,
    latest_run,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from omnifm.federated.config import FederationConfig
from omnifm.federated.dpsgd import private_model
from omnifm.federated.health import COLLAPSE_COSINE
from omnifm.federated.messages import FitRes
from omnifm.federated.privacy import PrivacyLedger
from omnifm.federated.reporting import append_csv, format_table, write_csv
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.server import Server
from omnifm.federated.trainer import quiet_lightning
from omnifm.tasks.base import OmniFMTask
from omnifm.tasks.multitask import MultiTask

__all__ = ["FederationError", "RoundLoop", "Stage", "Upload"]

log = logging.getLogger("omnifm")
Stage = Literal["validate", "test"]
Upload = tuple[str, str, Tensor]  # (client, modality, spectral prototypes)


METRICS = "metrics.yaml"  # in a run folder: the task's monitor, mode and metric directions


class FederationError(RuntimeError):
    """A round could not complete (too few clients succeeded)."""


class BudgetSpent(RuntimeError):
    """Too few of a round's sampled clients have DP-SGD budget left: training ends."""


class RoundLoop:
    """Rounds of sampled clients: aggregation by the strategy, the spectral bank, TensorBoard
    and CSV logs, and a checkpoint after every round.

    ``fit`` runs it all; a caller that drives a run itself (a benchmark timing one step)
    calls the same steps: ``start`` (new run or resume), ``warmup`` (the bank's round 0),
    ``fit_round``, ``evaluate`` and ``checkpoint``.

    Subclasses reach the clients: ``warmup_uploads``, ``fit_clients`` and
    ``evaluate_clients``; those holding personal states also ``client_state`` and
    ``load_client_state``.

    With a ``MultiTask`` model, ``tasks`` maps each client to its task: rows of
    ``history.csv`` and ``results.csv`` carry a ``task`` column and each task gets its own
    mean row (``mean:TASK``), as its metrics are its own.
    """

    def __init__(
        self,
        model: OmniFMTask | MultiTask,
        client_names: list[str],
        config: FederationConfig | None = None,
        recipe: str | None = None,
        tasks: Mapping[str, str] | None = None,
    ) -> None:
        self.config = cfg = config or FederationConfig()
        if cfg.dp_sgd is not None:  # every site builds the same private architecture
            model = private_model(model)
        self.model = model
        self.recipe = recipe
        self.client_names = list(client_names)
        stack = model.stack
        bank = None
        if stack is not None and stack.gskr:
            b = cfg.bank
            bank = SpectralBank(stack.spectral_dim, b.capacity, b.min_share, b.merge_threshold)
        sampler = ClientSampler(self.client_names, cfg.participation, cfg.seed, cfg.min_clients)
        self.server = Server(
            model,
            cfg.strategy,
            sampler,
            bank,
            cfg.seed,
            cfg.bank.prototypes_per_client,
            cfg.aggregator,
            tasks,
            None if cfg.aggregation_memory is None else int(cfg.aggregation_memory * 2**20),
            _ledger(cfg, bank is not None),
        )
        self.history: list[dict[str, Any]] = []
        self.round = 0
        self.run_dir: Path | None = None

    # what a backend provides -----------------------------------------------------------------
    def warmup_uploads(self) -> list[Upload]:
        """Spectral prototypes of the initial model from every client that could compute them."""
        raise NotImplementedError

    def fit_clients(self, round_: int, chosen: list[str]) -> Iterator[tuple[str, FitRes | str]]:
        """Local fits of ``chosen``, each ``(client, result)`` as it completes, in ``chosen``
        order (so aggregation sums in the same order on every backend); ``result`` is the
        reason as a string for a client that failed. The server folds each result into the
        round's aggregate before the next arrives."""
        raise NotImplementedError

    def evaluate_clients(self, stage: Stage) -> list[dict[str, Any]]:
        """One row per client: its metrics of the global model, or an ``error`` entry."""
        raise NotImplementedError

    def client_state(self) -> dict[str, Any]:
        """Client states and step counters that the server holds (none when clients do)."""
        return {"steps": {}}

    def load_client_state(self, state: dict[str, Any]) -> None:
        """Restore what ``client_state`` returned."""

    # public API ------------------------------------------------------------------------------
    def fit(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        """Train for ``config.rounds`` rounds (resuming from ``ckpt_path``), then test."""
        cfg = self.config
        with quiet_lightning():
            self.start(ckpt_path)
            if ckpt_path is None and self.server.bank is not None and cfg.bank.warmup:
                self.warmup()
            for round_ in range(self.round + 1, cfg.rounds + 1):
                try:
                    self.fit_round(round_)
                except BudgetSpent as spent:
                    log.warning("%s", spent)
                    break
                if round_ % cfg.eval_every == 0 or round_ == cfg.rounds:
                    self.evaluate(round_, "validate")
                self.checkpoint()
            return self.evaluate(self.round, "test")

    def validate(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        return self._evaluate_only("validate", ckpt_path)

    def test(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        return self._evaluate_only("test", ckpt_path)

    # the steps of a run, for callers that drive it themselves (benchmarks, notebooks) --------
    def start(self, ckpt_path: str | None = None) -> Path:
        """Open the run: resume from ``ckpt_path`` (``"last"``, a run folder or a file), or
        create a new ``output/name/version_N`` folder. Returns the run folder."""
        if ckpt_path is not None:
            self._resume(ckpt_path)
        else:
            self._new_run()
        log.info(
            "what is shared with whom (%s):\n%s",
            self.config.strategy,
            self.server.layout.describe(),
        )
        aggregator = self.server.aggregator
        held = sum(self.server.aggregation_bytes().values()) / 2**20
        log.info(
            "aggregation: %s, %s: %.0f MiB a round of %d clients",
            aggregator if aggregator is not None else "Mean()",
            "streamed" if aggregator is None or aggregator.streams else "every state held",
            held,
            self.server.sampler.per_round,
        )
        return self._run_dir()

    def warmup(self) -> None:
        """Every client uploads spectral prototypes of the initial model (round 0)."""
        start = time.perf_counter()
        for name, modality, prototypes in self.warmup_uploads():
            if not self.server.may_upload(name):  # a budget smaller than one upload
                continue
            try:
                self.server.upload(name, modality, prototypes, 0)
            except Exception as err:  # the client joins the bank at its first good round
                log.warning(
                    "bank warm-up: client %s left out: %s: %s", name, type(err).__name__, err
                )
        log.info("bank warm-up: %s (%.1fs)", self.server.bank, time.perf_counter() - start)

    def fit_round(self, round_: int) -> None:
        """One round: sample clients, fit them, aggregate, refresh and log the bank."""
        cfg = self.config
        chosen = self.server.sampler.sample(round_)
        spent = [c for c in chosen if not self.server.may_train(c)]
        if spent:
            log.info("round %d: %s have spent their DP-SGD budget", round_, ", ".join(spent))
            chosen = [c for c in chosen if c not in spent]
        if len(chosen) < cfg.min_clients:
            raise BudgetSpent(
                f"round {round_}: {len(chosen)} sampled clients have DP-SGD budget left (epsilon "
                f"{cfg.dp_sgd.epsilon if cfg.dp_sgd else 0:g} each), fewer than min_clients="
                f"{cfg.min_clients}: training ends after round {round_ - 1} and the model is "
                "tested as it is. Raise federation.dp_sgd.epsilon or noise_multiplier for more"
            )
        log.info("round %d/%d: clients %s", round_, cfg.rounds, ", ".join(chosen))
        received, failures = self.server.begin(round_), {}
        for client, result in self.fit_clients(round_, chosen):
            if isinstance(result, str):
                failures[client] = result
            else:
                received.add(result)
        if len(received) < cfg.min_clients:
            raise FederationError(
                f"round {round_}: {len(received)} of {len(chosen)} clients succeeded, fewer "
                f"than min_clients={cfg.min_clients}; failures: {failures}. The run stopped; "
                f"its last checkpoint ({self._run_dir() / 'checkpoints' / LAST}) is intact: "
                "fix the cause, then resume with --ckpt_path last"
            )
        self.server.finish(received)
        self.round = round_
        server_log = self._server_logger()
        server_log.log_metrics(
            {"round/clients_ok": len(received), "round/clients_failed": len(failures)}, round_
        )
        if self.server.bank is not None:
            self._log_bank_health(round_, server_log)
        if self.server.privacy is not None:
            self._log_privacy(round_, server_log, received.results)
        server_log.finalize("success")

    def _log_privacy(
        self, round_: int, server_log: TensorBoardLogger, results: list[FitRes]
    ) -> None:
        """The epsilon each client of the round has spent, on uploads (if it uploaded) and on
        DP-SGD (if it trained privately), to TensorBoard and ``history.csv`` (stage
        ``privacy``; a client's latest value is what it has spent); say when a client has no
        budget left for another upload or round."""
        ledger = self.server.privacy
        assert ledger is not None
        rows: dict[str, dict[str, float]] = {}
        for r in results:
            row = rows.setdefault(r.client, {})
            if ledger.privacy is not None and r.prototypes is not None:
                row["privacy/epsilon"] = ledger.epsilon(r.client)
                if not ledger.allows(r.client):
                    log.warning(
                        "client %s has spent epsilon %.2f of its %.2f (delta %g) on uploads: it "
                        "trains on but uploads no more spectral prototypes",
                        r.client,
                        row["privacy/epsilon"],
                        ledger.privacy.epsilon,
                        ledger.privacy.delta,
                    )
            if ledger.training is not None and "privacy/dp_steps" in r.metrics:
                row["privacy/dp_epsilon"] = ledger.training_epsilon(r.client)
                if not ledger.may_train(r.client):
                    log.warning(
                        "client %s has spent epsilon %.2f of its %.2f (delta %g) on DP-SGD: it "
                        "is not trained again",
                        r.client,
                        row["privacy/dp_epsilon"],
                        ledger.training.epsilon,
                        ledger.training.delta,
                    )
        rows = {c: row for c, row in rows.items() if row}
        metrics = {f"{k}/{c}": v for c, row in rows.items() for k, v in row.items()}
        server_log.log_metrics(metrics, round_)
        self.history += [
            {"round": round_, "stage": "privacy", "client": c, **row} for c, row in rows.items()
        ]
        for name, spent, budget in (
            ("uploads", map(ledger.epsilon, ledger.releases), ledger.privacy),
            ("DP-SGD", map(ledger.training_epsilon, ledger.trained), ledger.training),
        ):
            if budget is not None:
                log.info(
                    "privacy after round %d: epsilon spent on %s %.2f at most (budget %.2f)",
                    round_,
                    name,
                    max(spent, default=0.0),
                    budget.epsilon,
                )

    def _log_bank_health(self, round_: int, server_log: TensorBoardLogger) -> None:
        """Bank health to TensorBoard and ``history.csv`` (stage ``bank``); warn on collapse."""
        health = self.server.health
        server_log.log_metrics(health, round_)
        self.history.append({"round": round_, "stage": "bank", "client": "bank", **health})
        across = health.get("bank/proto_cos_across", float("nan"))
        if across > COLLAPSE_COSINE:
            log.warning(
                "round %d: the spectral tokens have collapsed: prototypes of different "
                "modalities have mean cosine %.4f (> %.2f), so retrieval and ECA carry no "
                "information. Check the stack's alignment (contrastive), self_context and "
                "standardize settings, and the spalign_weight",
                round_,
                across,
                COLLAPSE_COSINE,
            )
        log.info(
            "bank after round %d: %d entries, purity %.2f (chance %.2f), prototype cosine "
            "within/across modalities %.2f/%.2f",
            round_,
            len(self.server.bank),
            health.get("bank/purity", float("nan")),
            health.get("bank/purity_chance", float("nan")),
            health.get("bank/proto_cos_within", float("nan")),
            across,
        )

    def evaluate(self, round_: int, stage: Stage, record: bool = True) -> list[dict[str, Any]]:
        """Every client evaluates the global shared weights with its personal state.

        ``record``: a step of the run, kept in ``history.csv``, TensorBoard and (a test)
        ``results.csv``. Otherwise a checkpoint evaluated after the fact: its rows are appended
        to ``history_<stage>.csv`` beside the run's record, which stays as it was.
        """
        rows = self._with_means(self.evaluate_clients(stage))
        prefix = "val" if stage == "validate" else "test"
        for task, model in self.server.layout.tasks.items():
            main = f"{prefix}/{model.monitor}"
            mine = [r for r in rows if r.get("task", "") == task]
            log.info(
                "%s after round %d: mean %s %.4f (%s)",
                stage if not task else f"{stage} of task {task}",
                round_,
                main,
                mine[-1].get(main, float("nan")),
                ", ".join(f"{r['client']} {r.get(main, float('nan')):.3f}" for r in mine[:-1]),
            )
        run_dir = self._run_dir()
        if not record:
            path = run_dir / f"history_{stage}.csv"
            when = datetime.now().isoformat(timespec="seconds")
            append_csv([{"round": round_, "stage": stage, "at": when, **r} for r in rows], path)
            log.info(
                "%s results of the round-%d checkpoint (%s):\n%s",
                stage,
                round_,
                path,
                format_table(rows),
            )
            return rows
        for row in rows:
            self.history.append({"round": round_, "stage": stage, **row})
        server_log = self._server_logger()
        server_log.log_metrics(
            {f"{k}/{row['client']}": v for row in rows for k, v in row.items() if _metric(v)},
            round_,
        )
        server_log.finalize("success")
        write_csv(self.history, run_dir / "history.csv")
        if stage == "test":
            write_csv(rows, run_dir / "results.csv")
            log.info("test results (%s):\n%s", run_dir / "results.csv", format_table(rows))
        return rows

    def _with_means(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with the mean row; with many tasks a ``task`` column and a mean per task
        (``mean:TASK``) after its clients' rows."""
        layout = self.server.layout
        if not layout.multi:
            return [*rows, _mean_row(rows)]
        grouped: list[dict[str, Any]] = []
        for task in layout.tasks:
            mine = [{"task": task, **r} for r in rows if layout.task(r["client"]) == task]
            grouped += [*mine, {"task": task, **_mean_row(mine), "client": f"mean:{task}"}]
        return grouped

    def _evaluate_only(self, stage: Stage, ckpt_path: str | None) -> list[dict[str, Any]]:
        """``stage`` of every client on a checkpoint (or the initial model), written beside
        the run's record: ``history.csv``, ``results.csv`` and the checkpoint stay as they
        were, so ``omnifm validate``/``test`` after the fact never change what a run wrote."""
        with quiet_lightning():
            self.start(ckpt_path)
            return self.evaluate(self.round, stage, record=False)

    # state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "round": self.round,
            "server": self.server.state_dict(),
            **self.client_state(),
            "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state["steps"]) | set(state.get("personal", ()))
        unknown -= set(self.client_names)
        if unknown:
            raise ValueError(
                f"checkpoint has clients {sorted(unknown)} that this scenario lacks; "
                "resume with the recipe the run was started with"
            )
        self.server.load_state_dict(state["server"])
        self.round = state["round"]
        self.load_client_state(state)
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))

    def checkpoint(self) -> Path:
        """Save the run's state (after ``self.round``) to ``checkpoints/last.pt``; its path."""
        path = self._run_dir() / "checkpoints" / LAST
        save_checkpoint(self.state_dict(), path)
        return path

    def _resume(self, ckpt_path: str) -> None:
        path = resolve_checkpoint(ckpt_path, Path(self.config.output), self.config.name)
        state = load_checkpoint(path)
        self.run_dir = path.parent.parent  # before loading: client states may live in it
        self.load_state_dict(state)
        log.info("resumed %s at round %d", path, self.round)

    def _new_run(self) -> None:
        output, name = Path(self.config.output), self.config.name
        last = latest_run(output, name)
        version = int(last.name[8:]) + 1 if last is not None else 0
        self.run_dir = output / name / f"version_{version}"
        self.run_dir.mkdir(parents=True)
        if self.recipe is not None:
            (self.run_dir / "config.yaml").write_text(self.recipe)
        self._write_metric_modes()
        log.info("run folder: %s (tensorboard --logdir %s)", self.run_dir, self.run_dir)

    def _write_metric_modes(self) -> None:
        """``metrics.yaml``: the task's main metric and which direction is better for each
        metric, so ``omnifm report`` reads them instead of guessing from names. Many tasks:
        the first task's main metric at the top (for readers of one task), every task's
        under ``tasks``, and the directions of all their metrics."""
        assert self.run_dir is not None
        tasks = self.server.layout.tasks
        first = next(iter(tasks.values()))
        directions: dict[str, str] = {}
        for model in tasks.values():
            directions.update(model.metric_modes())
        modes: dict[str, Any] = {
            "monitor": first.monitor,
            "mode": first.mode,
            "modes": dict(sorted(directions.items())),
        }
        if self.server.layout.multi:
            modes["tasks"] = {
                t: {"monitor": m.monitor, "mode": m.mode, "clients": self._clients_of(t)}
                for t, m in tasks.items()
            }
        (self.run_dir / METRICS).write_text(yaml.safe_dump(modes, sort_keys=False))

    def _clients_of(self, task: str) -> list[str]:
        layout = self.server.layout
        return [c for c in self.client_names if layout.task(c) == task]

    def _run_dir(self) -> Path:
        if self.run_dir is None:
            self._new_run()
        assert self.run_dir is not None
        return self.run_dir

    def _server_logger(self) -> TensorBoardLogger:
        return TensorBoardLogger(
            self._run_dir(), name="", version="server", default_hp_metric=False
        )


def _metric(value: Any) -> bool:
    return isinstance(value, float)


def _mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over clients of every metric (the paper's mean client score)."""
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if _metric(v))
    mean = {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}
    return {"client": "mean", "modality": "-", **mean}


def _ledger(cfg: FederationConfig, bank: bool) -> PrivacyLedger | None:
    """The privacy accounts of a recipe's controls (none without any)."""
    uploads = cfg.bank.privacy if bank else None
    if uploads is None and cfg.dp_sgd is None:
        return None
    return PrivacyLedger(uploads, cfg.dp_sgd)
