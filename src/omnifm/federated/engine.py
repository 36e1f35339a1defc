"""The in-process federation: rounds of sampled clients sharing one model instance."""

from __future__ import annotations

import contextlib
import logging
import random
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from omnifm.bank import SpectralBank
from omnifm.federated.checkpoint import (
    LAST,
    latest_run,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from omnifm.federated.client import Client
from omnifm.federated.config import FederationConfig
from omnifm.federated.messages import EvaluateRes, FitRes
from omnifm.federated.reporting import ClientLogger, format_table, write_csv
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.server import Server, client_seed
from omnifm.tasks.base import OmniFMTask

__all__ = ["Federation", "FederationError"]

log = logging.getLogger("omnifm")
Stage = Literal["validate", "test"]


class FederationError(RuntimeError):
    """A round could not complete (too few clients succeeded)."""


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-Trainer banners: a run builds one Trainer per client per round."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*"):
            warnings.filterwarnings("ignore", pattern)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


class Federation:
    """Run federated training of ``model`` over the clients of ``datamodule``.

    Every round: sample clients, fit each with a fresh Lightning ``Trainer`` built from
    ``trainer_kwargs`` (the recipe's ``trainer`` section: local epochs or steps, accelerator,
    precision), aggregate by the strategy, refresh the spectral bank, validate every client,
    log to TensorBoard and checkpoint. ``fit`` ends with a test of every client.

    Example:
        >>> from omnifm.datamodules import FederatedDataModule  # doctest: +SKIP
        >>> run = Federation(ClassificationTask(num_classes=4), FederatedDataModule(...))
        >>> results = run.fit()  # list of per-client test metrics plus a "mean" row
    """

    def __init__(
        self,
        model: OmniFMTask,
        datamodule: Any,
        config: FederationConfig | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        recipe: str | None = None,
    ) -> None:
        self.model = model
        self.datamodule = datamodule
        self.config = cfg = config or FederationConfig()
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.recipe = recipe
        datamodule.prepare_data()
        datamodule.setup("fit")
        names = list(datamodule.client_names())
        stack = model.stack
        bank = None
        if stack is not None and stack.gskr:
            b = cfg.bank
            bank = SpectralBank(stack.spectral_dim, b.capacity, b.min_share, b.merge_threshold)
        sampler = ClientSampler(names, cfg.participation, cfg.seed, cfg.min_clients)
        self.server = Server(
            model, cfg.strategy, sampler, bank, cfg.seed, cfg.bank.prototypes_per_client
        )
        self.clients = {
            n: Client(
                n,
                datamodule.modality(n),
                datamodule.client_datamodule(n),
                self.server.initial_personal,
            )
            for n in names
        }
        self.history: list[dict[str, Any]] = []
        self.round = 0
        self.run_dir: Path | None = None

    # public API ---------------------------------------------------------------------------
    def fit(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        """Train for ``config.rounds`` rounds (resuming from ``ckpt_path``), then test."""
        cfg = self.config
        with _quiet_lightning():
            if ckpt_path is not None:
                self._resume(ckpt_path)
            else:
                self._new_run()
                if self.server.bank is not None and cfg.bank.warmup:
                    self._warmup()
            for round_ in range(self.round + 1, cfg.rounds + 1):
                self._fit_round(round_)
                if round_ % cfg.eval_every == 0 or round_ == cfg.rounds:
                    self._evaluate(round_, "validate")
                self._checkpoint(round_)
            return self._evaluate(self.round, "test")

    def validate(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        return self._evaluate_only("validate", ckpt_path)

    def test(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        return self._evaluate_only("test", ckpt_path)

    def make_trainer(self, **overrides: Any) -> Trainer:
        """A fresh per-client Trainer from the recipe's trainer settings."""
        kwargs = {
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "default_root_dir": str(self.run_dir or self.config.output),
            **self.trainer_kwargs,
            **overrides,
        }
        return Trainer(**kwargs)

    # rounds -------------------------------------------------------------------------------
    def _warmup(self) -> None:
        """Every client uploads spectral prototypes of the initial model (round 0)."""
        start = time.perf_counter()
        self.model.load_state_dict({**self.server.shared, **self.server.initial_personal})
        self.model.to(self._device())
        for name, client in self.clients.items():
            seed = client_seed(self.config.seed, 0, name)
            try:
                protos = client.prototypes(self.model, self.server.prototypes_per_client, seed)
                self.server.upload(name, client.modality, protos, 0)
            except Exception as err:  # the client joins the bank at its first good round
                log.warning(
                    "bank warm-up: client %s left out: %s: %s", name, type(err).__name__, err
                )
        self.model.cpu()
        log.info("bank warm-up: %s (%.1fs)", self.server.bank, time.perf_counter() - start)

    def _fit_round(self, round_: int) -> None:
        cfg = self.config
        chosen = self.server.sampler.sample(round_)
        log.info("round %d/%d: clients %s", round_, cfg.rounds, ", ".join(chosen))
        results: list[FitRes] = []
        failures: dict[str, str] = {}
        for i, name in enumerate(chosen, start=1):
            client = self.clients[name]
            start = time.perf_counter()
            logger = ClientLogger(self._run_dir(), name, client.steps)
            try:
                res = client.fit(
                    self.model,
                    self.server.fit_ins(round_, name),
                    cfg.strategy,
                    self.make_trainer,
                    logger,
                )
            except Exception as err:  # a failing hospital must not stop the federation
                failures[name] = f"{type(err).__name__}: {err}"
                log.warning(
                    "  [%d/%d] %s failed and is left out of round %d: %s\n%s",
                    i,
                    len(chosen),
                    name,
                    round_,
                    failures[name],
                    traceback.format_exc(limit=3),
                )
                continue
            results.append(res)
            loss = res.metrics.get("train/loss", float("nan"))
            log.info(
                "  [%d/%d] %-16s %-12s loss %.4f  %5.1fs",
                i,
                len(chosen),
                name,
                client.modality,
                loss,
                time.perf_counter() - start,
            )
        if len(results) < cfg.min_clients:
            raise FederationError(
                f"round {round_}: {len(results)} of {len(chosen)} clients succeeded, fewer "
                f"than min_clients={cfg.min_clients}; failures: {failures}. The run stopped; "
                f"its last checkpoint ({self._run_dir() / 'checkpoints' / LAST}) is intact: "
                "fix the cause, then resume with --ckpt_path last"
            )
        self.server.aggregate(round_, results)
        self.round = round_
        server_log = self._server_logger()
        server_log.log_metrics(
            {"round/clients_ok": len(results), "round/clients_failed": len(failures)}, round_
        )
        if self.server.bank is not None:
            server_log.log_metrics({"bank/entries": len(self.server.bank)}, round_)
        server_log.finalize("success")

    def _evaluate(self, round_: int, stage: Stage) -> list[dict[str, Any]]:
        """Every client evaluates the global shared weights with its personal state."""
        bank = self.server.bank.snapshot().state_dict() if self.server.bank is not None else None
        rows: list[dict[str, Any]] = []
        for name, client in self.clients.items():
            try:
                res: EvaluateRes = client.evaluate(
                    self.model, self.server.shared, bank, self.make_trainer, stage
                )
            except Exception as err:  # reported in the table, left out of the mean
                log.warning("%s of client %s failed: %s: %s", stage, name, type(err).__name__, err)
                rows.append({"client": name, "modality": client.modality, "error": str(err)})
                continue
            rows.append({"client": name, "modality": client.modality, **res.metrics})
        rows.append(_mean_row(rows))
        for row in rows:
            self.history.append({"round": round_, "stage": stage, **row})
        server_log = self._server_logger()
        server_log.log_metrics(
            {f"{k}/{row['client']}": v for row in rows for k, v in row.items() if _metric(v)},
            round_,
        )
        server_log.finalize("success")
        main = _main_metric(rows[-1])
        log.info(
            "%s after round %d: mean %s %.4f (%s)",
            stage,
            round_,
            main,
            rows[-1].get(main, 0.0),
            ", ".join(f"{r['client']} {r.get(main, float('nan')):.3f}" for r in rows[:-1]),
        )
        run_dir = self._run_dir()
        write_csv(self.history, run_dir / "history.csv")
        if stage == "test":
            write_csv(rows, run_dir / "results.csv")
            log.info("test results (%s):\n%s", run_dir / "results.csv", format_table(rows))
        return rows

    def _evaluate_only(self, stage: Stage, ckpt_path: str | None) -> list[dict[str, Any]]:
        with _quiet_lightning():
            if ckpt_path is not None:
                self._resume(ckpt_path)
            else:
                self._new_run()
            return self._evaluate(self.round, stage)

    # state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "round": self.round,
            "server": self.server.state_dict(),
            "personal": {n: c.personal for n, c in self.clients.items() if c.personal is not None},
            "steps": {n: c.steps for n, c in self.clients.items()},
            "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state["personal"]) - set(self.clients)
        if unknown:
            raise ValueError(
                f"checkpoint has clients {sorted(unknown)} that this scenario lacks; "
                "resume with the recipe the run was started with"
            )
        self.server.load_state_dict(state["server"])
        self.round = state["round"]
        for name, client in self.clients.items():
            client.personal = state["personal"].get(name)
            client.steps = state["steps"].get(name, 0)
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))

    def _checkpoint(self, round_: int) -> None:
        save_checkpoint(self.state_dict(), self._run_dir() / "checkpoints" / LAST)

    def _resume(self, ckpt_path: str) -> None:
        path = resolve_checkpoint(ckpt_path, Path(self.config.output), self.config.name)
        self.load_state_dict(load_checkpoint(path))
        self.run_dir = path.parent.parent
        log.info("resumed %s at round %d", path, self.round)

    def _new_run(self) -> None:
        output, name = Path(self.config.output), self.config.name
        last = latest_run(output, name)
        version = int(last.name[8:]) + 1 if last is not None else 0
        self.run_dir = output / name / f"version_{version}"
        self.run_dir.mkdir(parents=True)
        if self.recipe is not None:
            (self.run_dir / "config.yaml").write_text(self.recipe)
        log.info("run folder: %s (tensorboard --logdir %s)", self.run_dir, self.run_dir)

    def _run_dir(self) -> Path:
        if self.run_dir is None:
            self._new_run()
        assert self.run_dir is not None
        return self.run_dir

    def _server_logger(self) -> TensorBoardLogger:
        return TensorBoardLogger(
            self._run_dir(), name="", version="server", default_hp_metric=False
        )

    def _device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _metric(value: Any) -> bool:
    return isinstance(value, float)


def _mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over clients of every metric (the paper's mean client score)."""
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if _metric(v))
    mean = {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}
    return {"client": "mean", "modality": "-", **mean}


def _main_metric(row: dict[str, Any]) -> str:
    keys = [k for k in row if _metric(row[k])]
    preferred = [k for k in keys if k.endswith(("/acc", "/dice", "/psnr", "/vif"))]
    return (preferred or keys or ["-"])[0]
