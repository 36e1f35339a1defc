"""Benchmark where the federated overhead goes: cProfile of the rounds against a Lightning fit.

One federated run (``Federation.fit_round`` for every round, after ``start`` and the bank's
``warmup``, which are not profiled) and one plain Lightning fit of the same optimizer steps on
the union of the clients' data (``federation_time.py`` times the same two ways), each under
cProfile, after each way ran once untimed at 1 round x 1 client x 1 step (one-time costs of a
process). The report breaks the inclusive seconds down by part (Trainer construction, the
optimizer steps, loading and copying weights, spectral prototypes, aggregation, logging) and
lists the functions with the most own time. cProfile slows Python-heavy code more than tensor
code, so the parts are comparable with each other, not with unprofiled seconds.

Example:
    python benchmarks/federation_profile.py --rounds 2 --clients 2 --steps 2 --top 10
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _federation import (  # benchmarks/_federation.py
    add_run_args,
    check_run_args,
    federation,
    open_run,
    prepare,
    quiet_lightning,
    sync,
    time_lightning,
    warm_bank,
    warm_process,
)
from _report import RunRecord  # benchmarks/_report.py

Key = tuple[str, int, str]  # pstats: (file, line, function)
Pred = Callable[[Key], bool]
Row = tuple[str, float, float | None]  # label (indented: part of the row above), fed, Lightning


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
CLIENT = "omnifm/federated/client.py"
STEPS = func("lightning/pytorch/loops/training_epoch_loop.py", "advance")
RECAL = func("omnifm/tasks/base.py", "recalibrate_batch_norm")
FIT = func(LIGHTNING_TRAINER, "fit")
TRAINER_INIT = func(LIGHTNING_TRAINER, "__init__")


def breakdown(fed: pstats.Stats, fed_total: float, pl: pstats.Stats, pl_total: float) -> list[Row]:
    """(label, federated s, Lightning s) rows; indented labels are parts of the row above."""
    f = functools.partial(inclusive, fed)
    p = functools.partial(inclusive, pl)
    client_fit = f(func(CLIENT, "fit"))
    fed_fit, pl_fit = f(FIT), p(FIT)
    fed_steps, pl_steps = f(STEPS), p(STEPS)
    fed_recal, pl_recal = f(RECAL), p(RECAL)
    fed_init, pl_init = f(TRAINER_INIT), p(TRAINER_INIT)
    load = f(func(CLIENT, "load"))
    copy = f(func(CLIENT, "_cpu_state"))
    tokens = f(func(CLIENT, "spectral_tokens"))
    kmeans = f(func("omnifm/functional/aggregation.py", "kmeans"))
    client_logger = f(func("omnifm/federated/reporting.py", "__init__"))
    fit_ins = f(func("omnifm/federated/server.py", "fit_ins"))
    server = "omnifm/federated/server.py"
    aggregate = f(func(server, "add", "finish"))
    running = "omnifm/federated/aggregators.py"
    average = f(func(running, "add", "result"))
    engine_tb = f(tensorboard_files, func("omnifm/federated/rounds.py", "fit_round"))
    engine_tb += f(func("omnifm/federated/rounds.py", "_server_logger"))
    fed_tb, pl_tb = f(tensorboard_files), p(tensorboard_files)
    finite = f(func(CLIENT, "_finite"))
    known_fit = fed_init + fed_fit + load + copy + tokens + kmeans + client_logger
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
        (
            "      BN recalibration (`recalibrate_batch_norm`; before evaluation only)",
            fed_recal,
            pl_recal,
        ),
        (
            "      rest of `Trainer.fit` (setup, optimizer, callbacks, teardown)",
            fed_fit - fed_steps - fed_recal,
            pl_fit - pl_steps - pl_recal,
        ),
        ("    `Client.load` (shared + personal weights into the model)", load, None),
        ("    `_cpu_state` (copy of the trained state)", copy, None),
        ("    `Client.spectral_tokens` (spectral tokens of the client's data)", tokens, None),
        ("    k-means of the tokens (the uploaded prototypes)", kmeans, None),
        ("    `ClientLogger` construction", client_logger, None),
        ("    rest of `Client.fit` (seeding, checks, hit ids)", client_fit - known_fit, None),
        ("      of which the non-finite check of the state (`_finite`)", finite, None),
        ("  `Server.fit_ins` (bank snapshot per client)", fit_ins, None),
        ("  `Received.add` + `Server.finish` (streamed mean + bank update)", aggregate, None),
        ("    of which the running sum (`RunningSum.add`, `result`)", average, None),
        ("  server TensorBoard logger (per round)", engine_tb, None),
        ("  rest of `fit_round`", fed_total - known_round, None),
        ("all TensorBoard logging (nested in the rows above)", fed_tb, pl_tb),
    ]


def profiled(call: Callable[[], Any], device: torch.device) -> tuple[pstats.Stats, float]:
    """``call()`` under cProfile: its stats and its wall seconds (device synchronised)."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    call()
    sync(device)
    prof.disable()
    return pstats.Stats(prof), time.perf_counter() - start


def run_profile(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """cProfile the federated rounds and the Lightning fit."""
    warm_process(args, out / "warm", [args.stack])
    bank = warm_bank(args, out / "bank") if args.stack else None
    run = federation(args, args.stack, out, "profile-fed")

    def rounds() -> None:
        for round_ in range(1, args.rounds + 1):
            run.fit_round(round_)

    with quiet_lightning():
        open_run(run)
        fed, fed_total = profiled(rounds, args.device)
    pl, pl_total = profiled(
        lambda: time_lightning(args, args.stack, out / "profile-lightning", bank), args.device
    )
    top = sorted(
        ((k, v[2], v[3], v[1]) for k, v in fed.stats.items()),  # type: ignore[attr-defined]
        key=lambda x: -x[1],
    )[: args.top]
    return {"rows": breakdown(fed, fed_total, pl, pl_total), "top": top}


# report -----------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def profile_tables(prof: dict[str, Any], args: argparse.Namespace) -> list[str]:
    total = args.rounds * args.clients * args.steps
    lines = [
        "## Where the federated overhead goes (cProfile)",
        "",
        f"One federated run (rounds only) and one Lightning fit of the model "
        f"{'with' if args.stack else 'without'} the stack, each under cProfile (which slows "
        "Python-heavy code more than tensor code): "
        f"{args.rounds} rounds x {args.clients} clients x {args.steps} local steps = {total} "
        f"optimizer steps each; backbone `{args.backbone}`, {args.size}x{args.size} phantoms, "
        f"batch {args.batch}, embed_dim {args.embed_dim}; device {args.device_name}; torch "
        f"threads {args.threads}. Seconds are inclusive; indented rows are parts of the row "
        "above them. 'extra' is federated minus Lightning.",
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


INTRO = (
    "Which parts of OmniFM's in-process federation take the time that one plain Lightning fit "
    "of the same optimizer steps does not (`federation_time.py` times both unprofiled)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p)
    p.add_argument(
        "--stack",
        choices=["on", "off"],
        default="on",
        help="profile the model with the OmniFM stack or without it (stack=None)",
    )
    p.add_argument("--top", type=int, default=15, help="functions listed from the profile")
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = p.parse_args(argv)
    check_run_args(p, args)
    args.stack = args.stack == "on"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = RunRecord.begin(__file__, argv)
    prepare(args, record)
    print("profile: federated rounds and Lightning fit under cProfile", flush=True)
    with tempfile.TemporaryDirectory(prefix="omnifm-fed-profile-") as tmp:
        prof = run_profile(args, Path(tmp))
    title = "Federation overhead: where the time goes"
    body = profile_tables(prof, args)
    record.write(args.out, title, INTRO, body, threads=str(args.threads), device=args.device_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
