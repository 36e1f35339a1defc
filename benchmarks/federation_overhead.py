"""Benchmark the overhead of OmniFM's federation: time against plain Lightning and raw PyTorch,
and memory per client.

Part 1, time. The same model (``ClassificationTask``, with and without the OmniFM stack), the
same phantom data, the same device and the same total number of optimizer steps
``rounds * clients * steps``, trained three ways in one process:

* federated: ``Federation`` with ``rounds`` rounds of ``clients`` clients (participation 1),
  each client ``steps`` local steps (``trainer max_steps``); each client holds exactly
  ``steps`` batches, so a local fit is one epoch. Timed: ``Federation._fit_round(r)`` for every
  round (local fits with their fresh Trainers and loggers, prototype upload,
  aggregation, bank update, the server's TensorBoard log). Not in that number, timed apart:
  the bank warm-up before round 1 and the checkpoint ``fit()`` writes after each round.
  Evaluation between rounds is off (``eval_every`` beyond the run, and Lightning's own
  validation inside each local fit turned off with ``num_sanity_val_steps=0,
  limit_val_batches=0``). With ``--what-if`` a row (model with the stack) times the federated
  run with ``on_train_end`` patched out (older versions recalibrated BN there).
* Lightning: one ``Trainer(max_steps=rounds*clients*steps)`` fit on the union of the clients'
  training data (``FederatedDataModule``'s own loaders), same Trainer settings as the
  federation's local Trainers, TensorBoard logger.
* raw PyTorch: ``forward``, ``task_loss + spalign_weight * align``, ``backward``, AdamW
  ``step`` for the same number of steps on the union loader; nothing else.

The model with the stack retrieves from the same spectral bank in all three (the federation's
bank after warm-up, handed to the Lightning and raw models as a snapshot). Optional cProfile
breakdown of the federated rounds against the Lightning fit.

Part 2, memory. For each client count, a fresh subprocess builds a federation of tiny phantom
clients (OmniFM strategy, personal head + PSP suffix), runs the bank warm-up and a few rounds
with about ``--per-round`` clients each (plus the checkpoint after each round), and reports its
peak RSS and the bytes of the clients' personal states.

Example:
    python benchmarks/federation_overhead.py --rounds 2 --clients 2 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import functools
import json
import logging
import os
import platform
import pstats
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from _machine import available_cores, cpu_model, load_average  # benchmarks/_machine.py

try:
    import omnifm
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import omnifm

import lightning
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from omnifm.bank import BankSnapshot
from omnifm.blocks import OmniFMStack
from omnifm.datamodules import ClientSource, FederatedDataModule, PhantomDataModule
from omnifm.federated import FedAvg, Federation, FederationConfig, OmniFM
from omnifm.tasks import ClassificationTask

MODALITIES = ("ct", "mri", "xray", "ultrasound")  # the one-channel phantom styles
NO_EVAL = 10**9  # eval_every beyond any run: no validation between rounds
NO_LOCAL_VAL = {"num_sanity_val_steps": 0, "limit_val_batches": 0}
GOAL_TIME = 1.10  # federated / plain Lightning
GOAL_EXTRA_BYTES = 1_000_000  # per extra client, on top of its personal state (1 MB = 1e6 B)
MB = 1e6


# machine ----------------------------------------------------------------------------------


def git_state() -> str:
    """The checkout's commit, and which files under src/ differ from it (the library timed)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return f"{commit}, src/ as committed"
    return f"{commit} with uncommitted changes in {', '.join(changed)}"


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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's banners and data-loader hints off, as ``Federation.fit`` does for its own."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


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
        recalibrate_bn=args.recalibrate_bn,
    )


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


def federation(args: argparse.Namespace, stack: bool, out: Path, name: str) -> Federation:
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


# part 1: time -----------------------------------------------------------------------------
def time_federated(
    args: argparse.Namespace, stack: bool, out: Path, post_fit_bn: bool = True
) -> dict[str, Any]:
    """Seconds of the training rounds (``_fit_round``), warm-up and checkpoints apart.

    ``post_fit_bn=False`` is a what-if: the model's ``on_train_end`` hook (the BN
    recalibration pass after each local fit) is replaced by a no-op on this instance only.
    """
    name = f"fed-{'stack' if stack else 'plain'}{'' if post_fit_bn else '-no-post-fit-bn'}"
    run = federation(args, stack, out, name)
    if not post_fit_bn:
        run.model.on_train_end = lambda: None  # type: ignore[method-assign]
    with quiet():
        run._new_run()
        warmup = 0.0
        if run.server.bank is not None and run.config.bank.warmup:
            start = time.perf_counter()
            run._warmup()
            warmup = time.perf_counter() - start
        rounds, checkpoints = [], []
        for round_ in range(1, args.rounds + 1):
            sync(args.device)
            start = time.perf_counter()
            run._fit_round(round_)
            sync(args.device)
            rounds.append(time.perf_counter() - start)
            start = time.perf_counter()
            run._checkpoint(round_)
            checkpoints.append(time.perf_counter() - start)
    steps = sum(c.steps for c in run.clients.values())
    return {
        "seconds": sum(rounds),
        "rounds": rounds,
        "warmup": warmup,
        "checkpoint": sum(checkpoints),
        "steps": steps,
    }


def warm_bank(args: argparse.Namespace, out: Path) -> BankSnapshot:
    """The bank the federated run starts round 1 with, for the Lightning and raw models."""
    run = federation(args, True, out, "bank")
    with quiet():
        run._new_run()
        run._warmup()
    assert run.server.bank is not None
    return run.server.bank.snapshot()


def time_lightning(
    args: argparse.Namespace, stack: bool, out: Path, bank: BankSnapshot | None
) -> dict[str, Any]:
    """Seconds of one Trainer (construction and fit) over the union of the clients' data."""
    total = args.rounds * args.clients * args.steps
    data = make_data(args.clients, args.steps * args.batch, args.size, args.batch)
    model = make_model(args, stack)
    model.bank = bank if stack else None
    name = f"lightning-{'stack' if stack else 'plain'}"
    with quiet():
        sync(args.device)
        start = time.perf_counter()
        trainer = Trainer(
            max_steps=total,
            logger=TensorBoardLogger(out, name=name, default_hp_metric=False),
            **trainer_settings(out, args.device),
            **NO_LOCAL_VAL,
        )
        trainer.fit(model, datamodule=data)
        sync(args.device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": trainer.global_step}


def time_raw(args: argparse.Namespace, stack: bool, bank: BankSnapshot | None) -> dict[str, Any]:
    """Seconds of a hand loop: forward, task loss + SPAlign, backward, AdamW step."""
    total = args.rounds * args.clients * args.steps
    data = make_data(args.clients, args.steps * args.batch, args.size, args.batch)
    data.setup("fit")
    model = make_model(args, stack)
    loader = data.train_dataloader()
    sync(args.device)
    start = time.perf_counter()
    model.to(args.device).train()
    model.bank = bank.to(args.device) if stack and bank is not None else None
    optimizer = model.configure_optimizers()
    batches, steps = iter(loader), 0
    while steps < total:
        try:
            batch = next(batches)
        except StopIteration:  # next epoch
            batches = iter(loader)
            continue
        batch = move_data_to_device(batch, args.device)
        preds, out = model(batch)
        loss = model.task_loss(preds, batch) + model.spalign_weight * out.align
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    sync(args.device)
    return {"seconds": time.perf_counter() - start, "steps": steps}


def warm_process(args: argparse.Namespace, out: Path) -> None:
    """Each way once at 1 round x 1 client x 1 step, untimed: the first Trainer, first
    convolution, first TensorBoard writer of a process pay one-time costs."""
    tiny = argparse.Namespace(**{**vars(args), "rounds": 1, "clients": 1, "steps": 1})
    bank = warm_bank(tiny, out / "bank") if True in args.stack_variants else None
    for stack in args.stack_variants:
        time_raw(tiny, stack, bank)
        time_lightning(tiny, stack, out, bank)
        time_federated(tiny, stack, out)


WHAT_IF = "federated, no BN pass after local fits"


def run_timings(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Raw, Lightning and federated (and the what-if, with the stack) for each model variant,
    ``repeats`` times in rotating order."""
    warm_process(args, out / "warm")
    bank = warm_bank(args, out / "bank") if True in args.stack_variants else None
    ways: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
        "raw": lambda stack, _o: time_raw(args, stack, bank),
        "lightning": lambda stack, o: time_lightning(args, stack, o, bank),
        "federated": lambda stack, o: time_federated(args, stack, o),
        WHAT_IF: lambda stack, o: time_federated(args, stack, o, post_fit_bn=False),
    }
    results: dict[bool, dict[str, list[dict[str, Any]]]] = {}
    for rep in range(args.repeats):
        for stack in args.stack_variants:
            names = list(ways) if stack and args.what_if and args.recalibrate_bn else list(ways)[:3]
            for way in names[rep % len(names) :] + names[: rep % len(names)]:
                res = ways[way](stack, out / f"rep{rep}")
                res["load"] = os.getloadavg()[0]
                results.setdefault(stack, {}).setdefault(way, []).append(res)
                print(
                    f"  stack={'on' if stack else 'off'} {way:<38} {res['seconds']:7.2f} s "
                    f"({res['steps']} steps, load {res['load']:.2f})",
                    flush=True,
                )
    return [
        {"stack": s, "results": {w: results[s][w] for w in ways if w in results[s]}}
        for s in args.stack_variants
    ]


def median(results: list[dict[str, Any]], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in results)


# part 1b: where the federated overhead goes (cProfile) --------------------------------------
Key = tuple[str, int, str]
Pred = Callable[[Key], bool]


def func(path_end: str, *names: str) -> Pred:
    """Functions ``names`` of the file whose path ends with ``path_end``."""
    return lambda k: k[0].replace("\\", "/").endswith(path_end) and k[2] in names


def inclusive(stats: pstats.Stats, target: Pred, caller: Pred | None = None) -> float:
    """Inclusive seconds of the functions matching ``target``, counted at the calls from outside
    the set (so nested and recursive calls are not counted twice); ``caller`` restricts which
    calls count."""
    total = 0.0
    for key, (_, _, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not target(key):
            continue
        for c, (_, _, _, ct) in callers.items():
            if not target(c) and (caller is None or caller(c)):
                total += ct
    return total


def tensorboard_files(k: Key) -> bool:
    path = k[0].replace("\\", "/")
    return any(
        part in path
        for part in ("loggers/tensorboard.py", "/tensorboardX/", "/tensorboard/", "reporting.py")
    )


LIGHTNING_TRAINER = "lightning/pytorch/trainer/trainer.py"
STEPS = func("lightning/pytorch/loops/training_epoch_loop.py", "advance")
RECAL = func("omnifm/tasks/base.py", "recalibrate_batch_norm")
FIT = func(LIGHTNING_TRAINER, "fit")
TRAINER_INIT = func(LIGHTNING_TRAINER, "__init__")


def breakdown(fed: pstats.Stats, fed_total: float, pl: pstats.Stats, pl_total: float) -> list:
    """(label, federated s, Lightning s) rows; indented labels are parts of the row above."""
    f = functools.partial(inclusive, fed)
    p = functools.partial(inclusive, pl)
    client_fit = f(func("omnifm/federated/client.py", "fit"))
    fed_fit, pl_fit = f(FIT), p(FIT)
    fed_steps, pl_steps = f(STEPS), p(STEPS)
    fed_recal, pl_recal = f(RECAL), p(RECAL)
    fed_init, pl_init = f(TRAINER_INIT), p(TRAINER_INIT)
    load = f(func("omnifm/federated/client.py", "load"))
    copy = f(func("omnifm/federated/client.py", "_cpu_state"))
    protos = f(func("omnifm/federated/client.py", "prototypes"))
    kmeans = f(func("omnifm/functional/aggregation.py", "kmeans"))
    client_logger = f(func("omnifm/federated/reporting.py", "__init__"))
    fit_ins = f(func("omnifm/federated/server.py", "fit_ins"))
    aggregate = f(func("omnifm/federated/server.py", "aggregate"))
    average = f(func("omnifm/functional/aggregation.py", "weighted_average"))
    engine_tb = f(tensorboard_files, func("omnifm/federated/rounds.py", "_fit_round"))
    engine_tb += f(func("omnifm/federated/rounds.py", "_server_logger"))
    fed_tb, pl_tb = f(tensorboard_files), p(tensorboard_files)
    # the state's check is a list comprehension: its own frame (<listcomp>) in Python 3.11
    in_fit = func("omnifm/federated/client.py", "fit", "<listcomp>")
    isfinite = f(func("~", "<built-in method torch.isfinite>"), in_fit)
    known_fit = fed_init + fed_fit + load + copy + protos + client_logger
    known_round = client_fit + fit_ins + aggregate + engine_tb
    return [
        ("training rounds / Lightning fit, total (profiled)", fed_total, pl_total),
        ("  local fits (`Client.fit`)", client_fit, None),
        ("    Trainer construction", fed_init, pl_init),
        ("    `Trainer.fit`", fed_fit, pl_fit),
        (
            "      optimizer steps (loop `advance`: batch, forward, backward, AdamW, hooks)",
            fed_steps,
            pl_steps,
        ),
        ("      BN recalibration pass (`OmniFMTask.on_train_end`)", fed_recal, pl_recal),
        (
            "      rest of `Trainer.fit` (setup, optimizer, callbacks, teardown)",
            fed_fit - fed_steps - fed_recal,
            pl_fit - pl_steps - pl_recal,
        ),
        ("    `Client.load` (shared + personal weights into the model)", load, None),
        ("    `_cpu_state` (copy of the trained state)", copy, None),
        ("    `Client.prototypes` (spectral tokens of the client's data + k-means)", protos, None),
        ("      of which k-means", kmeans, None),
        ("    `ClientLogger` construction", client_logger, None),
        ("    rest of `Client.fit` (seeding, checks, hit ids)", client_fit - known_fit, None),
        (
            "      of which the non-finite checks (`torch.isfinite` of state and metrics)",
            isfinite,
            None,
        ),
        ("  `Server.fit_ins` (bank snapshot per client)", fit_ins, None),
        ("  `Server.aggregate` (FedAvg mean + bank update)", aggregate, None),
        ("    of which `weighted_average`", average, None),
        ("  server TensorBoard logger (per round)", engine_tb, None),
        ("  rest of `_fit_round`", fed_total - known_round, None),
        ("all TensorBoard logging (nested in the rows above)", fed_tb, pl_tb),
    ]


def run_profile(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """cProfile the federated rounds and the Lightning fit (model with the stack)."""
    stack = True in args.stack_variants
    bank = warm_bank(args, out / "bank") if stack else None
    run = federation(args, stack, out, "profile-fed")
    with quiet():
        run._new_run()
        if run.server.bank is not None:
            run._warmup()
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        for round_ in range(1, args.rounds + 1):
            run._fit_round(round_)
        sync(args.device)
        prof.disable()
        fed_total = time.perf_counter() - start
    fed = pstats.Stats(prof)
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    time_lightning(args, stack, out / "profile-lightning", bank)
    prof.disable()
    pl_total = time.perf_counter() - start
    pl = pstats.Stats(prof)
    top = sorted(
        ((k, v[2], v[3], v[1]) for k, v in fed.stats.items()),  # type: ignore[attr-defined]
        key=lambda x: -x[1],
    )[: args.top]
    return {
        "stack": stack,
        "rows": breakdown(fed, fed_total, pl, pl_total),
        "top": top,
    }


# part 2: memory ---------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def high_water_bytes() -> int:
    """``VmHWM``: the peak RSS of this process image only (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def current_rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tensor_bytes(states: list[dict[str, torch.Tensor]]) -> int:
    """Bytes of the distinct tensor storages in ``states`` (shared storages counted once)."""
    seen: dict[int, int] = {}
    for state in states:
        for t in state.values():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def memory_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One federation of ``args.memory_worker`` tiny clients; peak RSS and personal bytes."""
    n = args.memory_worker
    device = pick_device()
    torch.set_num_threads(args.threads)
    base_rss = current_rss_bytes()
    start = time.perf_counter()
    data = make_data(n, 8, 16, 8, num_val=4, num_test=4)

    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    seed_everything(0, verbose=False)
    model = ClassificationTask(
        num_classes=PhantomDataModule.num_classes,
        in_channels=1,
        backbone="test_resnet",
        embed_dim=16,
        stack=factory,
    )
    config = FederationConfig(
        rounds=args.memory_rounds,
        participation=min(1.0, args.per_round / n),
        strategy=OmniFM(),
        eval_every=NO_EVAL,
        output=args.memory_out,
        name=f"memory-{n}",
    )
    trainer = {"max_steps": 1, **trainer_device(device), **NO_LOCAL_VAL}  # as federation()
    with quiet():
        run = Federation(model, data, config, trainer)
        setup = time.perf_counter() - start
        run._new_run()
        rss_setup = current_rss_bytes()
        start = time.perf_counter()
        if run.server.bank is not None and config.bank.warmup:
            run._warmup()
        warmup = time.perf_counter() - start
        rss_warmup = current_rss_bytes()
        start = time.perf_counter()
        trained = 0
        for round_ in range(1, config.rounds + 1):
            run._fit_round(round_)
            run._checkpoint(round_)
            trained += len(run.server.sampler.history[-1])
        rounds = time.perf_counter() - start
    states = [c.personal_state for c in run.clients.values()]
    own = [c.personal for c in run.clients.values() if c.personal is not None]
    return {
        "clients": n,
        "per_round": run.server.sampler.per_round,
        "trained": trained,
        "with_own_personal": len(own),
        "personal_state_bytes": tensor_bytes([run.server.initial_personal]),
        "personal_all_bytes": sum(t.nbytes for s in states for t in s.values()),
        "personal_distinct_bytes": tensor_bytes(states),
        "bank_entries": len(run.server.bank) if run.server.bank is not None else 0,
        "base_rss": base_rss,
        "rss_setup": rss_setup,
        "rss_warmup": rss_warmup,
        "rss_end": current_rss_bytes(),
        "peak_rss": peak_rss_bytes(),
        "vm_hwm": high_water_bytes(),
        "setup_s": setup,
        "warmup_s": warmup,
        "rounds_s": rounds,
        "device": str(device),
    }


def run_memory(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    rows = []
    for n in args.client_counts:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-worker",
            str(n),
            "--memory-rounds",
            str(args.memory_rounds),
            "--per-round",
            str(args.per_round),
            "--threads",
            str(args.threads),
            "--memory-out",
            str(out / "memory"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"memory worker for {n} clients failed:\n{proc.stdout}{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"  {n:>5} clients: peak RSS {row['peak_rss'] / MB:8.1f} MB, warm-up "
            f"{row['warmup_s']:.1f} s, rounds {row['rounds_s']:.1f} s",
            flush=True,
        )
    return rows


# report -----------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def time_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    total = args.rounds * args.clients * args.steps
    lines = [
        "## Time: federated vs plain Lightning vs raw PyTorch",
        "",
        f"{args.rounds} rounds x {args.clients} clients x {args.steps} local steps = {total} "
        f"optimizer steps in each way; backbone `{args.backbone}`, {args.size}x{args.size} "
        f"phantoms, batch {args.batch}, embed_dim {args.embed_dim}; device {args.device_name}; "
        f"torch threads {args.threads}; BN recalibration after each fit "
        f"(`recalibrate_bn`): {'on' if args.recalibrate_bn else 'off'}; median of "
        f"{args.repeats} run(s) each ('fastest runs': the same ratio of the fastest runs, "
        "less sensitive to the other jobs on the machine).",
        "",
        "| model | raw PyTorch (s) | plain Lightning (s) | federated (s) | federated/Lightning "
        "| federated/raw | Lightning/raw | goal fed/Lightning <= 1.10 "
        "| fed/Lightning, fastest runs | steps raw/Lightning/fed |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---|",
    ]
    for row in rows:
        res = row["results"]
        raw, pl, fed = (median(res[w]) for w in ("raw", "lightning", "federated"))
        steps = "/".join(str(res[w][0]["steps"]) for w in ("raw", "lightning", "federated"))
        met = "met" if fed / pl <= GOAL_TIME else "**not met**"
        fastest = min(r["seconds"] for r in res["federated"]) / min(
            r["seconds"] for r in res["lightning"]
        )
        name = "with OmniFM stack" if row["stack"] else "`stack=None` (plain)"
        lines.append(
            f"| {name} | {raw:.2f} | {pl:.2f} | {fed:.2f} | {fed / pl:.3f} | {fed / raw:.3f} "
            f"| {pl / raw:.3f} | {met} | {fastest:.3f} | {steps} |"
        )
    lines += [
        "",
        "Around the timed rounds (not in the federated column):",
        "",
        "| model | way | seconds | note |",
        "|---|---|---:|---|",
    ]
    for row in rows:
        name = "with OmniFM stack" if row["stack"] else "`stack=None` (plain)"
        fed = row["results"]["federated"]
        lines.append(
            f"| {name} | bank warm-up before round 1 | {median(fed, 'warmup'):.2f} "
            "| every client's spectral prototypes of the initial model |"
        )
        lines.append(
            f"| {name} | checkpoints (`fit()` writes one per round) "
            f"| {median(fed, 'checkpoint'):.2f} | sum over {args.rounds} rounds |"
        )
        per_round = " / ".join(f"{s:.2f}" for s in fed[0]["rounds"])
        lines.append(f"| {name} | federated rounds, first run | {per_round} | seconds per round |")
        what_if = row["results"].get(WHAT_IF)
        if what_if:
            sec, pl = median(what_if), median(row["results"]["lightning"])
            fastest = min(r["seconds"] for r in what_if) / min(
                r["seconds"] for r in row["results"]["lightning"]
            )
            lines.append(
                f"| {name} | what-if: federated without the BN recalibration pass after each "
                f"local fit | {sec:.2f} | {sec / pl:.3f}x plain Lightning (fastest runs "
                f"{fastest:.3f}); `on_train_end` made a no-op on the federated model only; "
                "validation and test recalibrate on their own |"
            )
    if args.repeats > 1:
        lines += ["", "All runs (seconds, load average 1 min after each):", ""]
        for row in rows:
            for way, res in row["results"].items():
                runs = ", ".join(f"{r['seconds']:.2f} ({r['load']:.1f})" for r in res)
                lines.append(f"- stack {'on' if row['stack'] else 'off'}, {way}: {runs}")
    return lines


def profile_tables(prof: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [
        "## Where the federated overhead goes (cProfile)",
        "",
        f"One more federated run (rounds only) and one more Lightning fit of the model "
        f"{'with' if prof['stack'] else 'without'} the stack, each under cProfile (which slows "
        "Python-heavy code more than tensor code). Seconds are inclusive; indented rows are "
        "parts of the row above them. 'extra' is federated minus Lightning.",
        "",
        "| part | federated (s) | Lightning (s) | extra (s) | extra, % of Lightning total |",
        "|---|---:|---:|---:|---:|",
    ]
    pl_total = prof["rows"][0][2]
    for label, fed, pl in prof["rows"]:
        extra = None if pl is None else fed - pl
        extra_pct = None if extra is None else 100 * extra / pl_total
        level = (len(label) - len(label.lstrip())) // 2
        name = "↳" * level + (" " if level else "") + label.strip()
        lines.append(f"| {name} | {fmt(fed)} | {fmt(pl)} | {fmt(extra)} | {fmt(extra_pct, 1)} |")
    lines += [
        "",
        f"Top {args.top} functions of the federated rounds by own time:",
        "",
        "| function | own (s) | inclusive (s) | calls |",
        "|---|---:|---:|---:|",
    ]
    for (path, line, name), tt, ct, calls in prof["top"]:
        short = "/".join(Path(path).parts[-2:]) if path != "~" else "builtin"
        lines.append(f"| `{short}:{line}({name})` | {tt:.2f} | {ct:.2f} | {calls} |")
    return lines


def memory_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        "## Memory per client",
        "",
        f"Each client count in a fresh subprocess: tiny phantom clients (8 train / 4 val / 4 test "
        f"images, 16x16, batch 8), backbone `test_resnet`, embed_dim 16, OmniFM strategy "
        f"(personal: head + PSP suffix), default bank settings with warm-up, "
        f"{args.memory_rounds} round(s) of about {args.per_round} clients with max_steps 1, "
        "a checkpoint after each round, no evaluation. Peak RSS: `ru_maxrss` of the subprocess "
        "and `VmHWM` (/proc/self/status) beside it; imports and model are included in both and "
        "cancel in the difference. 'own personal states': clients that have trained and hold "
        "their own personal tensors; the others share the server's initial personal state "
        "(one set of tensors), so 'distinct' counts each storage once and 'summed' adds "
        "`client.personal_state` over all clients as if each had its own.",
        "",
        "| clients | trained per round | RSS after setup (MB) | RSS after warm-up (MB) "
        "| peak RSS ru_maxrss (MB) | VmHWM (MB) | personal state per client (B) "
        "| own personal states | personal tensors, distinct (B) "
        "| personal_state summed over clients (B) | bank entries | setup (s) | warm-up (s) "
        "| rounds (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']:,} | {r['per_round']} | {r['rss_setup'] / MB:.1f} "
            f"| {r['rss_warmup'] / MB:.1f} | {r['peak_rss'] / MB:.1f} | {r['vm_hwm'] / MB:.1f} "
            f"| {r['personal_state_bytes']:,} | {r['with_own_personal']} "
            f"| {r['personal_distinct_bytes']:,} | {r['personal_all_bytes']:,} "
            f"| {r['bank_entries']} | {r['setup_s']:.1f} | {r['warmup_s']:.1f} "
            f"| {r['rounds_s']:.1f} |"
        )
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        extra = hi["clients"] - lo["clients"]
        per_client = (hi["peak_rss"] - lo["peak_rss"]) / extra
        per_hwm = (hi["vm_hwm"] - lo["vm_hwm"]) / extra
        per_setup = (hi["rss_setup"] - lo["rss_setup"]) / extra
        budget = hi["personal_state_bytes"] + GOAL_EXTRA_BYTES
        met = "met" if max(per_client, per_hwm) <= budget else "**not met**"
        lines += [
            "",
            f"Per extra client = (peak({hi['clients']:,}) - peak({lo['clients']:,})) / "
            f"{extra:,} = **{per_client / 1e3:,.1f} kB** by ru_maxrss, "
            f"{per_hwm / 1e3:,.1f} kB by VmHWM (RSS after setup: {per_setup / 1e3:,.1f} kB). "
            f"Goal: personal state + 1 MB = {hi['personal_state_bytes']:,} B + 1,000,000 B = "
            f"{budget / 1e3:,.1f} kB: **{met}**. Bank warm-up: "
            f"{1e3 * hi['warmup_s'] / hi['clients']:.1f} ms per client at "
            f"{hi['clients']:,} clients ({hi['warmup_s']:.1f} s).",
        ]
        if any(abs(r["peak_rss"] - r["vm_hwm"]) > 0.02 * r["vm_hwm"] for r in rows if r["vm_hwm"]):
            lines += [
                "",
                "Note: ru_maxrss and VmHWM differ by more than 2% somewhere: Linux carries the "
                "RSS of the launching process into a child's ru_maxrss across fork/exec, so "
                "VmHWM is the cleaner number here.",
            ]
    return lines


def markdown(args: argparse.Namespace, parts: dict[str, Any], wall: float) -> str:
    lines = [
        "# Federation overhead benchmark",
        "",
        "OmniFM's in-process federation against the same optimizer steps in one plain "
        "Lightning fit and in a raw PyTorch loop, and its memory per client. Goals: federated "
        f"at most {GOAL_TIME:.2f}x plain Lightning; memory per extra client at most its "
        "personal state plus 1 MB.",
        "",
    ]
    if "time" in parts:
        lines += [*time_tables(parts["time"], args), ""]
    if "profile" in parts:
        lines += [*profile_tables(parts["profile"], args), ""]
    if "memory" in parts:
        lines += [*memory_tables(parts["memory"], args), ""]
    lines += [
        "## What is timed",
        "",
        "- federated: the sum of `Federation._fit_round(r)` over all rounds: per client a "
        "fresh Trainer and `ClientLogger`, loading shared + personal weights, the local fit "
        "(its BN recalibration pass included), the copy of the trained state and the spectral "
        "prototypes; then aggregation, bank update and the server's TensorBoard log. Timed "
        "apart: the bank warm-up before round 1 and the per-round checkpoint that `fit()` "
        "writes. Not run: validation between rounds (`eval_every` beyond the run), Lightning's "
        f"validation inside local fits ({', '.join(f'{k}={v}' for k, v in NO_LOCAL_VAL.items())}"
        "; `Client.fit` also sets them itself since 3dadd32), the final test. What-if row: "
        "the same federated run with the model's `on_train_end` hook (the BN recalibration "
        "pass after each local fit) replaced by a no-op on that model instance.",
        "- plain Lightning: construction of one Trainer with the federation's local Trainer "
        "settings plus a TensorBoard logger, and its `fit` (BN recalibration once at the end).",
        "- raw PyTorch: moving the model, building AdamW, and the loop; no metrics, logging, "
        "or BN recalibration.",
        "- Same initial weights (seed 0), same data (the union of the clients' training sets), "
        "same spectral bank (the federation's after warm-up), same device, same number of "
        "optimizer steps (checked in the steps column).",
        "",
        "## Run",
        "",
        f"- command: `{args.command}`",
        f"- library: git {args.git_start}"
        + ("" if git_state() == args.git_start else f" at the start, {git_state()} at the end"),
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- total wall time: {wall:.1f} s",
        "",
        "## Machine",
        "",
        f"- device: {args.device_name}",
        f"- CPU: {cpu_model()}, {available_cores()} cores available "
        f"({os.cpu_count()} logical CPUs); torch threads: {args.threads}",
        f"- load average (1/5/15 min) at start: {args.load_start}, at end: {load_average()} "
        "(other processes on the machine compete for the same cores)",
        f"- Python {platform.python_version()}, torch {torch.__version__}, lightning "
        f"{lightning.__version__}, omnifm {getattr(omnifm, '__version__', 'unknown')}",
        "",
    ]
    return "\n".join(lines)


# main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="local steps per client and round")
    p.add_argument("--backbone", default="resnet18", help="timm backbone of the time part")
    p.add_argument("--size", type=int, default=32, help="phantom image size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--spectral-dim", type=int, default=64)
    p.add_argument("--low-pass", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each way (median)")
    p.add_argument(
        "--stack",
        choices=["both", "on", "off"],
        default="both",
        help="time the model with the OmniFM stack, without it (stack=None), or both",
    )
    p.add_argument(
        "--what-if",
        action="store_true",
        help="also time the federated run with on_train_end patched out (a no-op since BN "
        "recalibration moved to evaluation time; kept to compare older library versions)",
    )
    p.add_argument(
        "--no-recalibrate-bn",
        dest="recalibrate_bn",
        action="store_false",
        help="the model's recalibrate_bn=False (no BN statistics pass after each fit)",
    )
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--top", type=int, default=15, help="functions listed from the profile")
    p.add_argument(
        "--client-counts",
        type=int,
        nargs="*",
        default=[10, 100, 1000],
        help="client counts of the memory part (none: skip it)",
    )
    p.add_argument("--per-round", type=int, default=10, help="clients per round, memory part")
    p.add_argument("--memory-rounds", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: steadier on a shared machine, see the README)",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    p.add_argument("--memory-worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.stack_variants = {"both": [True, False], "on": [True], "off": [False]}[args.stack]
    if min(args.rounds, args.clients, args.steps, args.repeats, args.threads) < 1:
        p.error("--rounds, --clients, --steps, --repeats and --threads must be >= 1")
    if any(n < 1 for n in args.client_counts):
        p.error("--client-counts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(args)))
        return 0
    args.command = "python " + shlex.join(sys.argv if argv is None else [__file__, *argv])
    torch.set_num_threads(args.threads)
    args.device = pick_device()
    args.device_name = device_name(args.device)
    args.load_start = load_average()
    args.git_start = git_state()
    print(f"library: git {args.git_start}")
    print(f"device {args.device_name}, threads {args.threads}, load {args.load_start}")
    start = time.perf_counter()
    parts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="omnifm-fed-bench-") as tmp:
        out = Path(tmp)
        if args.client_counts:  # first: a subprocess's ru_maxrss starts at ours (see README)
            print("memory: one subprocess per client count", flush=True)
            parts["memory"] = run_memory(args, out)
        print("time: raw PyTorch / plain Lightning / federated", flush=True)
        parts["time"] = run_timings(args, out / "time")
        for row in parts["time"]:
            res = row["results"]
            ratio = median(res["federated"]) / median(res["lightning"])
            print(f"  stack={'on' if row['stack'] else 'off'}: federated/Lightning {ratio:.3f}")
        if args.profile:
            print("profile: federated rounds and Lightning fit under cProfile", flush=True)
            parts["profile"] = run_profile(args, out / "profile")
    wall = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(args, parts, wall))
    print(f"wrote {args.out} in {wall:.1f} s (load {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
