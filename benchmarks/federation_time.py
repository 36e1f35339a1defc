"""Benchmark the time of OmniFM's federation against plain Lightning and raw PyTorch.

The same model (``ClassificationTask``, with and without the OmniFM stack), the same phantom
data, the same device and the same total number of optimizer steps
``rounds * clients * steps``, trained three ways in one process:

* federated: ``Federation`` with ``rounds`` rounds of ``clients`` clients (participation 1),
  each client ``steps`` local steps (``trainer max_steps``); each client holds exactly
  ``steps`` batches, so a local fit is one epoch. Timed: ``Federation.fit_round(r)`` for every
  round (local fits with their fresh Trainers and loggers, prototype upload, aggregation,
  bank update, the server's TensorBoard log). Not in that number, timed apart: the bank
  warm-up before round 1 (``warmup``) and the checkpoint ``fit()`` writes after each round
  (``checkpoint``). Evaluation between rounds is off (``eval_every`` beyond the run, and
  Lightning's own validation inside each local fit turned off with
  ``num_sanity_val_steps=0, limit_val_batches=0``).
* Lightning: one ``Trainer(max_steps=rounds*clients*steps)`` fit on the union of the clients'
  training data (``FederatedDataModule``'s own loaders), same Trainer settings as the
  federation's local Trainers, TensorBoard logger.
* raw PyTorch: ``forward``, ``task_loss + spalign_weight * align``, ``backward``, AdamW
  ``step`` for the same number of steps on the union loader; nothing else.

The model with the stack retrieves from the same spectral bank in all three (the federation's
bank after warm-up, handed to the Lightning and raw models as a snapshot). Every way runs once
untimed at 1 x 1 x 1 first (one-time costs of a process), then ``--repeats`` timed runs each in
rotating order; the tables give medians. ``federation_profile.py`` shows where the federated
extra time goes.

Example:
    python benchmarks/federation_time.py --rounds 2 --clients 2 --steps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _federation import (  # benchmarks/_federation.py
    NO_LOCAL_VAL,
    add_run_args,
    check_run_args,
    make_data,
    make_model,
    prepare,
    sync,
    time_federated,
    time_lightning,
    warm_bank,
    warm_process,
)
from _report import RunRecord  # benchmarks/_report.py
from lightning.fabric.utilities.apply_func import move_data_to_device

from omnifm.bank import BankSnapshot

GOAL_TIME = 1.10  # federated / plain Lightning


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
    retrieve_from = bank.to(args.device) if stack and bank is not None else None
    optimizer = model.configure_optimizers()
    batches, steps = iter(loader), 0
    while steps < total:
        try:
            batch = next(batches)
        except StopIteration:  # next epoch
            batches = iter(loader)
            continue
        batch = move_data_to_device(batch, args.device)
        preds, out = model(batch, retrieve_from)
        loss = model.task_loss(preds, batch) + model.spalign_weight * out.align
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    sync(args.device)
    return {"seconds": time.perf_counter() - start, "steps": steps}


def run_timings(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Raw, Lightning and federated for each model variant, ``repeats`` times in rotating
    order (after one untimed run of each at 1 x 1 x 1)."""
    warm_process(args, out / "warm", args.stack_variants, raw=time_raw)
    bank = warm_bank(args, out / "bank") if True in args.stack_variants else None
    ways: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
        "raw": lambda stack, _o: time_raw(args, stack, bank),
        "lightning": lambda stack, o: time_lightning(args, stack, o, bank),
        "federated": lambda stack, o: time_federated(args, stack, o),
    }
    names = list(ways)
    results: dict[bool, dict[str, list[dict[str, Any]]]] = {}
    for rep in range(args.repeats):
        for stack in args.stack_variants:
            for way in names[rep % len(names) :] + names[: rep % len(names)]:
                res = ways[way](stack, out / f"rep{rep}")
                res["load"] = os.getloadavg()[0]
                results.setdefault(stack, {}).setdefault(way, []).append(res)
                print(
                    f"  stack={'on' if stack else 'off'} {way:<10} {res['seconds']:7.2f} s "
                    f"({res['steps']} steps, load {res['load']:.2f})",
                    flush=True,
                )
    return [{"stack": s, "results": {w: results[s][w] for w in ways}} for s in args.stack_variants]


def median(results: list[dict[str, Any]], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in results)


def fastest_ratio(res: dict[str, list[dict[str, Any]]]) -> float:
    """Federated / Lightning of the fastest run of each: less sensitive to other jobs."""
    return min(r["seconds"] for r in res["federated"]) / min(r["seconds"] for r in res["lightning"])


def model_name(stack: bool) -> str:
    return "with OmniFM stack" if stack else "`stack=None` (plain)"


# report -----------------------------------------------------------------------------------
def time_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    total = args.rounds * args.clients * args.steps
    lines = [
        "## Time: federated vs plain Lightning vs raw PyTorch",
        "",
        f"{args.rounds} rounds x {args.clients} clients x {args.steps} local steps = {total} "
        f"optimizer steps in each way; backbone `{args.backbone}`, {args.size}x{args.size} "
        f"phantoms, batch {args.batch}, embed_dim {args.embed_dim}; device {args.device_name}; "
        f"torch threads {args.threads}; median of {args.repeats} run(s) each ('fastest runs': "
        "the same ratio of the fastest runs, less sensitive to the other jobs on the machine).",
        "",
        "| model | raw PyTorch (s) | plain Lightning (s) | federated (s) | federated/Lightning "
        f"| federated/raw | Lightning/raw | goal fed/Lightning <= {GOAL_TIME:.2f} "
        "| fed/Lightning, fastest runs | steps raw/Lightning/fed |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---|",
    ]
    for row in rows:
        res = row["results"]
        raw, pl, fed = (median(res[w]) for w in ("raw", "lightning", "federated"))
        steps = "/".join(str(res[w][0]["steps"]) for w in ("raw", "lightning", "federated"))
        met = "met" if fed / pl <= GOAL_TIME else "**not met**"
        lines.append(
            f"| {model_name(row['stack'])} | {raw:.2f} | {pl:.2f} | {fed:.2f} | {fed / pl:.3f} "
            f"| {fed / raw:.3f} | {pl / raw:.3f} | {met} | {fastest_ratio(res):.3f} | {steps} |"
        )
    lines += [
        "",
        "Around the timed rounds (not in the federated column):",
        "",
        "| model | way | seconds | note |",
        "|---|---|---:|---|",
    ]
    for row in rows:
        name, fed = model_name(row["stack"]), row["results"]["federated"]
        per_round = " / ".join(f"{s:.2f}" for s in fed[0]["rounds"])
        lines += [
            f"| {name} | bank warm-up before round 1 | {median(fed, 'warmup'):.2f} "
            "| every client's spectral prototypes of the initial model |",
            f"| {name} | checkpoints (`fit()` writes one per round) "
            f"| {median(fed, 'checkpoint'):.2f} | sum over {args.rounds} rounds |",
            f"| {name} | federated rounds, first run | {per_round} | seconds per round |",
        ]
    if args.repeats > 1:
        lines += ["", "All runs (seconds, load average 1 min after each):", ""]
        for row in rows:
            for way, res in row["results"].items():
                runs = ", ".join(f"{r['seconds']:.2f} ({r['load']:.1f})" for r in res)
                lines.append(f"- stack {'on' if row['stack'] else 'off'}, {way}: {runs}")
    return lines


WHAT_IS_TIMED = [
    "## What is timed",
    "",
    "- federated: the sum of `Federation.fit_round(r)` over all rounds: per client a fresh "
    "Trainer and `ClientLogger`, loading shared + personal weights, the local fit, the copy of "
    "the trained state and the spectral prototypes; then aggregation, bank update and the "
    "server's TensorBoard log. Timed apart: the bank warm-up before round 1 (`warmup`) and the "
    "per-round checkpoint that `fit()` writes (`checkpoint`). Not run: validation between "
    "rounds (`eval_every` beyond the run), Lightning's validation inside local fits "
    f"({', '.join(f'{k}={v}' for k, v in NO_LOCAL_VAL.items())}; `Client.fit` also sets them "
    "itself since 3dadd32), the final test.",
    "- plain Lightning: construction of one Trainer with the federation's local Trainer "
    "settings plus a TensorBoard logger, and its `fit`.",
    "- raw PyTorch: moving the model, building AdamW, and the loop; no metrics or logging.",
    "- No way re-estimates batch-norm statistics: the model does that only before a standalone "
    "validate or test.",
    "- Same initial weights (seed 0), same data (the union of the clients' training sets), "
    "same spectral bank (the federation's after warm-up), same device, same number of "
    "optimizer steps (checked in the steps column).",
]


INTRO = (
    "OmniFM's in-process federation against the same optimizer steps in one plain Lightning fit "
    f"and in a raw PyTorch loop. Goal: federated at most {GOAL_TIME:.2f}x plain Lightning."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each way (median)")
    p.add_argument(
        "--stack",
        choices=["both", "on", "off"],
        default="both",
        help="time the model with the OmniFM stack, without it (stack=None), or both",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = p.parse_args(argv)
    check_run_args(p, args)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.stack_variants = {"both": [True, False], "on": [True], "off": [False]}[args.stack]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = RunRecord.begin(__file__, argv)
    prepare(args, record)
    print("time: raw PyTorch / plain Lightning / federated", flush=True)
    with tempfile.TemporaryDirectory(prefix="omnifm-fed-time-") as tmp:
        rows = run_timings(args, Path(tmp))
    for row in rows:
        ratio = median(row["results"]["federated"]) / median(row["results"]["lightning"])
        print(f"  stack={'on' if row['stack'] else 'off'}: federated/Lightning {ratio:.3f}")
    body = [*time_tables(rows, args), "", *WHAT_IS_TIMED]
    title = "Federation overhead: time"
    record.write(args.out, title, INTRO, body, threads=str(args.threads), device=args.device_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
