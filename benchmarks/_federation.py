"""Shared setup of the federation benchmarks ``federation_time.py`` and
``federation_profile.py``: phantom clients, the classification model, a ``Federation`` driven
step by step through ``RoundLoop``'s public steps (``start``, ``warmup``, ``fit_round``,
``checkpoint``), and one plain Lightning fit of the same optimizer steps.

Every run of a script uses the same initial weights (seed 0), the same phantom data (each
client its own seed and a modality in turn) and the same device (CUDA when there is one).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _machine import cpu_model  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py

try:
    import omnifm  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from omnifm.bank import BankSnapshot
from omnifm.blocks import OmniFMStack
from omnifm.datamodules import ClientSource, FederatedDataModule, PhantomDataModule
from omnifm.federated import FedAvg, Federation, FederationConfig, OmniFM
from omnifm.federated.callbacks import BankRetrieval
from omnifm.federated.trainer import quiet_lightning
from omnifm.tasks import ClassificationTask

MODALITIES = ("ct", "mri", "xray", "ultrasound")  # the one-channel phantom styles
NO_EVAL = 10**9  # eval_every beyond any run: no validation between rounds
NO_LOCAL_VAL = {"num_sanity_val_steps": 0, "limit_val_batches": 0}


# arguments and device ---------------------------------------------------------------------
def add_run_args(p: argparse.ArgumentParser) -> None:
    """The federated run and model of the time and profile benchmarks (same defaults)."""
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="local steps per client and round")
    p.add_argument("--backbone", default="resnet18", help="timm backbone")
    p.add_argument("--size", type=int, default=32, help="phantom image size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--spectral-dim", type=int, default=64)
    p.add_argument("--low-pass", type=int, default=16)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: steadier on a shared machine, see the README)",
    )


def check_run_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.rounds, args.clients, args.steps, args.threads) < 1:
        p.error("--rounds, --clients, --steps and --threads must be >= 1")


def prepare(args: argparse.Namespace, record: RunRecord) -> None:
    """Set the torch threads, pick the device (``args.device``, ``args.device_name``) and print
    them with the library's git state and the load."""
    torch.set_num_threads(args.threads)
    args.device = pick_device()
    args.device_name = device_name(args.device)
    print(f"library: git {record.git_start}")
    print(f"device {args.device_name}, threads {args.threads}, load {record.load_start}")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()})"


def trainer_device(device: torch.device) -> dict[str, Any]:
    return {"accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": 1}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# the model and the data -------------------------------------------------------------------
def make_data(
    clients: int, num_train: int, size: int, batch: int, num_val: int = 32, num_test: int = 32
) -> FederatedDataModule:
    """``clients`` phantom clients, modalities in turn, each with its own seed (own images)."""
    sources = [
        ClientSource(
            f"c{i:04d}",
            PhantomDataModule(
                modality=MODALITIES[i % len(MODALITIES)],  # type: ignore[arg-type]
                num_train=num_train,
                num_val=num_val,
                num_test=num_test,
                size=size,
                seed=i,
            ),
        )
        for i in range(clients)
    ]
    return FederatedDataModule(sources, in_channels=1, batch_size=batch)


def make_model(args: argparse.Namespace, stack: bool) -> ClassificationTask:
    """The same initial weights in every call (seeded like the CLI does)."""
    factory = (
        functools.partial(
            OmniFMStack,
            spectral_dim=args.spectral_dim,
            low_pass_size=args.low_pass,
            top_k=8,
            num_layers=1,
            num_heads=4,
            num_prefix=4,
        )
        if stack
        else None
    )
    seed_everything(0, verbose=False)
    return ClassificationTask(
        num_classes=PhantomDataModule.num_classes,
        in_channels=1,
        backbone=args.backbone,
        embed_dim=args.embed_dim,
        stack=factory,
    )


def federation(args: argparse.Namespace, stack: bool, out: Path, name: str) -> Federation:
    """``args.rounds`` rounds of all ``args.clients`` clients, each ``args.steps`` local steps
    (one epoch: a client holds ``steps`` batches); OmniFM strategy with the stack, FedAvg
    without; no evaluation between rounds."""
    data = make_data(args.clients, args.steps * args.batch, args.size, args.batch)
    config = FederationConfig(
        rounds=args.rounds,
        strategy=OmniFM() if stack else FedAvg(),
        eval_every=NO_EVAL,
        output=str(out),
        name=name,
    )
    # Client.fit turns Lightning's validation off itself (since 3dadd32); older versions need it
    trainer = {"max_steps": args.steps, **trainer_device(args.device), **NO_LOCAL_VAL}
    return Federation(make_model(args, stack), data, config, trainer)


def open_run(run: Federation) -> float:
    """``run.start()`` (a new run folder), then the bank's warm-up (round 0) where the run has
    a bank that warms up; returns the warm-up's seconds (0 without one)."""
    run.start()
    if run.server.bank is None or not run.config.bank.warmup:
        return 0.0
    start = time.perf_counter()
    run.warmup()
    return time.perf_counter() - start


def warm_bank(args: argparse.Namespace, out: Path) -> BankSnapshot:
    """The bank the federated run starts round 1 with, for the Lightning and raw models."""
    run = federation(args, True, out, "bank")
    with quiet_lightning():
        open_run(run)
    assert run.server.bank is not None
    return run.server.bank.snapshot()


# the timed ways ---------------------------------------------------------------------------
def time_federated(args: argparse.Namespace, stack: bool, out: Path) -> dict[str, Any]:
    """Seconds of the training rounds (``fit_round``), warm-up and checkpoints apart."""
    run = federation(args, stack, out, f"fed-{'stack' if stack else 'plain'}")
    with quiet_lightning():
        warmup = open_run(run)
        rounds, checkpoints = [], []
        for round_ in range(1, args.rounds + 1):
            sync(args.device)
            start = time.perf_counter()
            run.fit_round(round_)
            sync(args.device)
            rounds.append(time.perf_counter() - start)
            start = time.perf_counter()
            run.checkpoint()
            checkpoints.append(time.perf_counter() - start)
    return {
        "seconds": sum(rounds),
        "rounds": rounds,
        "warmup": warmup,
        "checkpoint": sum(checkpoints),
        "steps": sum(c.steps for c in run.clients.values()),
    }


def trainer_settings(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """What ``Federation.make_trainer`` gives every local Trainer, plus the device."""
    return {
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
        "default_root_dir": str(run_dir),
        **trainer_device(device),
    }


def time_lightning(
    args: argparse.Namespace, stack: bool, out: Path, bank: BankSnapshot | None
) -> dict[str, Any]:
    """Seconds of one Trainer (construction and fit) over the union of the clients' data, for
    ``rounds * clients * steps`` optimizer steps, with the federation's local Trainer settings
    and a TensorBoard logger."""
    total = args.rounds * args.clients * args.steps
    data = make_data(args.clients, args.steps * args.batch, args.size, args.batch)
    model = make_model(args, stack)
    name = f"lightning-{'stack' if stack else 'plain'}"
    with quiet_lightning():
        sync(args.device)
        start = time.perf_counter()
        trainer = Trainer(
            max_steps=total,
            logger=TensorBoardLogger(out, name=name, default_hp_metric=False),
            callbacks=[BankRetrieval(bank if stack else None)],  # as a client's Trainer has
            **trainer_settings(out, args.device),
            **NO_LOCAL_VAL,
        )
        trainer.fit(model, datamodule=data)
        sync(args.device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": trainer.global_step}


RawWay = Callable[[argparse.Namespace, bool, BankSnapshot | None], Any]


def warm_process(
    args: argparse.Namespace, out: Path, stacks: list[bool], raw: RawWay | None = None
) -> None:
    """Each way once at 1 round x 1 client x 1 step, untimed: the first Trainer, first
    convolution, first TensorBoard writer of a process pay one-time costs."""
    tiny = argparse.Namespace(**{**vars(args), "rounds": 1, "clients": 1, "steps": 1})
    bank = warm_bank(tiny, out / "bank") if True in stacks else None
    for stack in stacks:
        if raw is not None:
            raw(tiny, stack, bank)
        time_lightning(tiny, stack, out, bank)
        time_federated(tiny, stack, out)
