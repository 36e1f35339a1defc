"""Benchmark OmniFM past the paper's 3-8 clients: 50, 200 and 1000 hospitals on one machine.

The scenario (``scenario``): the three MedMNIST files of ``../shared/data/medmnist`` split by
Dirichlet label skew (alpha 1) into 10%, 20% and 40% of the clients, at most 10, 20 and 40
sites (their validation splits, 78, 120 and 524 images, give every site at least one image
within 10 Dirichlet draws up to there; alpha 0.5 did not at 60 X-ray sites), and the other
clients phantom
CT, MRI and pathology sites of 16 train / 8 val / 8 test images; all 28x28, three channels,
label spaces disjoint. ResNet-18 (timm, random init) with the recipes' OmniFM stack and
strategy, 10% participation, ``--steps`` local steps of batch 16 per sampled client.

Parts, each resumable (its JSON in ``--out`` is reused):

* ``memory``: per client count a worker subprocess builds the federation, warms the bank up
  (every client uploads), runs ``--rounds`` rounds at 10% participation, then ``--rounds``
  rounds of a fixed ``--fixed`` sampled clients. Reported: peak RSS (``VmHWM``), seconds per
  round of both kinds, the bank's size and the time of one retrieval from it. With
  ``--held`` counts, the same worker also runs with every result of a round held until the
  round ends, which is what the server did before it streamed aggregation.
* ``accuracy``: OmniFM, FedAvg and FedPer at ``--accuracy-clients`` clients after the same
  budget (``omnifm fit``, ``--accuracy-rounds`` rounds), mean client test accuracy.
* ``flower``: the ``--accuracy-clients`` scenario on Flower's simulation engine against in
  process, ``--flower-rounds`` rounds, wall time of the whole command.

Example (the committed ``scale.md``; then a smoke run)::

    python benchmarks/scale.py --out /tmp/scale
    python benchmarks/scale.py --counts 6 12 --held 12 --rounds 1 --fixed 2 --steps 1 \\
        --parts memory --backbone test_resnet --out /tmp/scale-smoke
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _memory import current_rss_bytes, high_water_bytes, tensor_bytes  # benchmarks/_memory.py
from _report import RunRecord  # benchmarks/_report.py

HERE = Path(__file__).resolve().parent
GOAL_EXTRA_BYTES = 1_000_000  # per extra client, on top of its personal state
REAL = (  # (file, modality, share of the clients, most sites its validation split allows)
    ("breastmnist", "ultrasound", 0.1, 10),
    ("retinamnist", "fundus", 0.2, 20),
    ("pneumoniamnist", "x-ray", 0.4, 40),
)
PHANTOM = ("ct", "mri", "pathology")
METHODS = {"OmniFM": [], "FedAvg": ["--model.init_args.stack=null"]}
METHODS["FedPer"] = METHODS["FedAvg"]
MB = 1e6


# the scenario ---------------------------------------------------------------------------------
def sites(n: int) -> dict[str, int]:
    """How many clients each source becomes at ``n`` clients."""
    real = {f: min(cap, max(1, round(share * n))) for f, _, share, cap in REAL}
    rest = n - sum(real.values())
    if rest < len(PHANTOM):
        raise SystemExit(f"{n} clients are too few for the scenario; use at least 10")
    phantom = {m: rest // len(PHANTOM) + (i < rest % len(PHANTOM)) for i, m in enumerate(PHANTOM)}
    return {**real, **phantom}


def scenario(n: int, args: argparse.Namespace, data_root: str) -> dict[str, Any]:
    """The recipe of ``n`` clients (see the module docstring)."""
    counts = sites(n)
    clients: list[dict[str, Any]] = [
        {
            "name": flag,
            "modality": modality,
            "data": {
                "class_path": "omnifm.datamodules.MedMNISTDataModule",
                "init_args": {"flag": flag, "root": f"{data_root}/medmnist", "size": 28},
            },
            "partition": {
                "kind": "dirichlet",
                "sites": counts[flag],
                "alpha": 1.0,
                "min_samples": 1,
            },
        }
        for flag, modality, _, _ in REAL
    ]
    for i, modality in enumerate(PHANTOM):
        k = counts[modality]
        clients.append(
            {
                "name": f"phantom-{modality}",
                "modality": modality,
                "data": {
                    "class_path": "omnifm.datamodules.PhantomDataModule",
                    "init_args": {
                        "modality": modality,
                        "size": 28,
                        "num_train": 16 * k,
                        "num_val": 8 * k,
                        "num_test": 8 * k,
                        "seed": 100 + i,
                    },
                },
                "partition": {"kind": "iid", "sites": k},
            }
        )
    stack = {"spectral_dim": 64, "low_pass_size": 16, "top_k": 8, "num_layers": 1, "num_heads": 4}
    return {
        "seed_everything": 0,
        "model": {
            "class_path": "omnifm.tasks.ClassificationTask",
            "init_args": {
                "backbone": args.backbone,
                "embed_dim": 128,
                "stack": {"class_path": "omnifm.blocks.OmniFMStack", "init_args": stack},
                "spalign_weight": 0.1,
                "optimizer": {
                    "class_path": "torch.optim.AdamW",
                    "init_args": {"lr": 0.001, "fused": True},
                },
            },
        },
        "data": {
            "class_path": "omnifm.datamodules.FederatedDataModule",
            "init_args": {
                "in_channels": 3,
                "label_space": "disjoint",
                "batch_size": 16,
                "seed": 0,
                "clients": clients,
            },
        },
        "trainer": {
            "max_steps": args.steps,
            "accelerator": "auto",
            "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
        },
        "federation": {
            "rounds": args.rounds,
            "participation": 0.1,
            "strategy": "OmniFM",
            "eval_every": 10**9,
            "name": f"scale-{n}",
        },
    }


def write_recipe(n: int, args: argparse.Namespace) -> Path:
    path = Path(args.out) / f"recipe-{n}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}")  # runs at once may write it: whole or nothing
    part.write_text(yaml.safe_dump(scenario(n, args, str(args.data)), sort_keys=False))
    part.replace(path)
    return path


# the memory and time worker (its own process per client count) --------------------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from omnifm.federated import Federation
    from omnifm.federated.messages import FitRes
    from omnifm.federated.trainer import quiet_lightning
    from omnifm.recipe import load_recipe

    torch.set_num_threads(args.threads)
    n = args.worker
    text = write_recipe(n, args).read_text()
    out = f"--federation.output={args.out}/runs-{'held' if args.hold else 'streamed'}"
    start = time.perf_counter()
    recipe = load_recipe(text, [out])
    run = Federation(recipe.model, recipe.datamodule, recipe.config, recipe.trainer, text)
    setup = time.perf_counter() - start
    held: list[FitRes] = []
    if args.hold:  # the server before streaming: the round's results kept until it ends
        fit_clients = run.fit_clients

        def holding(round_: int, chosen: list[str]) -> Any:
            for name, result in fit_clients(round_, chosen):
                if isinstance(result, FitRes):
                    held.append(dataclasses.replace(result, weights=dict(result.weights)))
                yield name, result

        run.fit_clients = holding  # type: ignore[method-assign]
    row: dict[str, Any] = {"clients": n, "held": args.hold, "setup_s": setup}
    with quiet_lightning():
        run.start()
        row["rss_setup"] = current_rss_bytes()
        start = time.perf_counter()
        run.warmup()
        row["warmup_s"] = time.perf_counter() - start
        row["rss_warmup"] = current_rss_bytes()
        # the same number of sampled clients at every count first, then 10% of them
        per_round = [min(args.fixed, n), run.server.sampler.per_round]
        for kind, sampled in zip(("fixed", "part"), per_round, strict=True):
            run.server.sampler.fraction = sampled / n  # the benchmark's own schedule
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                run.fit_round(run.round + 1)
                times.append(time.perf_counter() - start)
                row["held_results"] = max(row.get("held_results", 0), len(held))
                held.clear()  # as the server dropped them after the round
                run.checkpoint()
            row[f"sampled_{kind}"] = sampled
            row[f"round_{kind}_s"] = sum(times) / len(times)
            row[f"peak_{kind}"] = high_water_bytes()
    bank = run.server.bank
    assert bank is not None
    snapshot = bank.snapshot()
    queries = torch.randn(16 * 49, bank.dim)  # one batch of 16 images' 7x7 tokens
    snapshot.retrieve(queries, 8)
    start = time.perf_counter()
    for _ in range(20):
        snapshot.retrieve(queries, 8)
    personal = run.server.initial_personal
    row |= {
        "retrieve_ms": (time.perf_counter() - start) / 20 * 1e3,
        "bank_entries": len(bank),
        "shared_bytes": tensor_bytes([run.server.shared]),
        "personal_state_bytes": tensor_bytes([personal]),
        "rss_end": current_rss_bytes(),
        "peak_rss": high_water_bytes(),
        "rss_live": live_rss_bytes(),
    }
    return row


def live_rss_bytes() -> int:
    """RSS once the memory freed so far is handed back: glibc keeps freed blocks of the
    per-client state copies for reuse, so RSS and its peak grow with the clients a round
    samples although the live tensors do not (``malloc_trim``; plain RSS elsewhere)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return current_rss_bytes()


def run_worker(n: int, hold: bool, args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / f"memory-{n}{'-held' if hold else ''}.json"
    if path.exists():
        return json.loads(path.read_text())
    cmd = [sys.executable, __file__, "--worker", str(n), *args.passed]
    cmd += ["--hold"] if hold else []
    print(f"  memory/time at {n} clients{' (held)' if hold else ''} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(
            f"worker for {n} clients failed:\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
        )
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - start
    path.write_text(json.dumps(row))
    print(
        f"    peak {row['peak_rss'] / MB:,.0f} MB, {row['round_part_s']:.1f} s/round at "
        f"{row['sampled_part']} sampled, {row['round_fixed_s']:.1f} s at {row['sampled_fixed']}",
        flush=True,
    )
    return row


# accuracy and Flower: whole `omnifm fit` runs -------------------------------------------------
def fit(name: str, extra: list[str], n: int, args: argparse.Namespace, env: dict) -> dict:
    """``omnifm fit`` of the ``n``-client scenario; its wall time and mean test accuracy."""
    path = Path(args.out) / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "omnifm", "fit", "--config", str(write_recipe(n, args))]
    cmd += [f"--federation.output={out}", f"--federation.name={name}", *extra]
    print(f"  {name} ...", flush=True)
    start = time.perf_counter()
    log = Path(args.out) / f"{name}.log"
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - start
    if code.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {code.returncode}); see {log}")
    with (out / name / "version_0" / "results.csv").open() as f:
        mean = next(r for r in csv.DictReader(f) if r["client"] == "mean")
    row = {"name": name, "wall_s": wall, "acc": float(mean["test/acc"]), "command": cmd[2:]}
    path.write_text(json.dumps(row))
    print(f"    {wall:.0f} s, mean test acc {row['acc']:.3f}", flush=True)
    return row


# the report -----------------------------------------------------------------------------------
def markdown(
    args: argparse.Namespace,
    memory: list[dict],
    accuracy: list[dict],
    flower: list[dict],
    record: RunRecord,
) -> str:
    lines = [
        "# Past the paper's 3-8 clients: 50, 200 and 1000 hospitals on one machine",
        "",
        "Written by `benchmarks/scale.py` (its docstring: the scenario and what each part "
        f"measures). {args.backbone}, OmniFM, 10% participation, "
        f"{args.steps} local steps of batch 16 per sampled client.",
        "",
    ]
    if memory:
        lines += [
            "## Memory and seconds per round",
            "",
            "Each count in its own process: setup, bank warm-up, "
            f"{args.rounds} rounds of {args.fixed} sampled clients, then {args.rounds} rounds "
            "of 10%. Peak RSS is `VmHWM` (imports, model, data, warm-up and rounds), read after "
            "each kind of round; 'live' is the RSS at the end once glibc hands back the memory "
            "it keeps from freed blocks (`malloc_trim`). 'held': every result of a round kept "
            "until the round ends, as the server did before it streamed aggregation.",
            "",
            "| clients | aggregation | RSS after setup (MB) | peak, fixed rounds (MB) | "
            "peak, 10% rounds (MB) | live at end (MB) | s/round, fixed (sampled) | "
            "s/round, 10% (sampled) | s per sampled client, 10% | bank entries | "
            "retrieval (ms) | warm-up (s) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in memory:
            lines.append(
                f"| {r['clients']:,} | {'held' if r['held'] else 'streamed'} | "
                f"{r['rss_setup'] / MB:,.0f} | {r['peak_fixed'] / MB:,.0f} | "
                f"{r['peak_part'] / MB:,.0f} | {live(r)} | "
                f"{r['round_fixed_s']:.1f} ({r['sampled_fixed']}) | "
                f"{r['round_part_s']:.1f} ({r['sampled_part']}) | "
                f"{r['round_part_s'] / r['sampled_part']:.2f} | {r['bank_entries']} | "
                f"{r['retrieve_ms']:.2f} | {r['warmup_s']:.0f} |"
            )
        lines += ["", "Retrieval: 784 queries (a batch of 16 images' 7x7 tokens), top-8."]
        streamed = [r for r in memory if not r["held"]]
        lo, hi = streamed[0], streamed[-1]
        if hi["clients"] > lo["clients"]:
            extra = hi["clients"] - lo["clients"]
            budget = hi["personal_state_bytes"] + GOAL_EXTRA_BYTES
            lines += [
                "",
                f"Memory per extra client, ({hi['clients']:,} - {lo['clients']:,}) / "
                f"{extra:,}; goal: its personal state ({hi['personal_state_bytes']:,} B: "
                f"head and PSP suffix) + 1 MB = {budget / 1e3:,.1f} kB:",
                "",
            ]
            for what, key in (
                (f"peak after the rounds of {args.fixed} sampled clients", "peak_fixed"),
                ("live at the end", "rss_live"),
                ("peak after the 10% rounds (10x more clients sampled at the top)", "peak_part"),
            ):
                per = (hi[key] - lo[key]) / extra
                met = "met" if per <= budget else "**not met**"
                lines.append(f"- {what}: **{per / 1e3:,.1f} kB**: {met}")
            held = [r for r in memory if r["held"] and r["clients"] == hi["clients"]]
            if held:
                lines += [
                    "",
                    f"At {hi['clients']:,} clients the held results of a 10% round "
                    f"peaked at {held[0]['peak_part'] / MB:,.0f} MB, streamed "
                    f"{hi['peak_part'] / MB:,.0f} MB; one client's shared state is "
                    f"{hi['shared_bytes'] / MB:,.1f} MB.",
                ]
    if accuracy:
        lines += [
            "",
            f"## Accuracy at {args.accuracy_clients} clients",
            "",
            f"{args.accuracy_rounds} rounds at 10% participation, {args.accuracy_steps} local "
            "steps, "
            "seed 0, mean client test accuracy (label spaces disjoint: each client's own "
            "classes).",
            "",
            "| method | mean test acc | wall (s) |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['name'].split('-')[0]} | {r['acc']:.3f} | {r['wall_s']:.0f} |" for r in accuracy
        ]
    if flower:
        lines += [
            "",
            f"## Flower's simulation engine at {args.accuracy_clients} clients",
            "",
            f"{args.flower_rounds} rounds at 10% participation, the whole `omnifm fit` "
            "command (imports, Ray start, rounds, the final test of every client).",
            "",
            "| backend | wall (s) | mean test acc |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['name'].split('-')[1]} | {r['wall_s']:.0f} | {r['acc']:.3f} |" for r in flower
        ]
    lines += ["", "## Command", "", f"`{record.command}`", ""]
    parts = [*memory, *accuracy, *flower]
    timed = [r["wall_s"] for r in parts if "wall_s" in r]
    untimed = (
        f", {len(parts) - len(timed)} without a recorded time" if len(timed) < len(parts) else ""
    )
    lines += record.footer(
        threads=f"{args.threads} per process",
        notes=args.note,
        wall=sum(timed),
        wall_note=f"the parts' own runs, summed{untimed}; a call reuses the parts in --out",
    )
    return "\n".join(lines)


def live(row: dict[str, Any]) -> str:
    """The live RSS cell: only for the server as it is (a held row emulates the old one)."""
    return "-" if row["held"] else f"{row['rss_live'] / MB:,.0f}"


def plot(memory: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for held in (False, True):
        rows = [r for r in memory if r["held"] == held]
        if not rows:
            continue
        label = "held (before streaming)" if held else "streamed"
        x = [r["clients"] for r in rows]
        ax1.plot(x, [r["peak_part"] / MB for r in rows], "o-", label=f"peak, 10%, {label}")
        if not held:
            ax1.plot(x, [r["peak_fixed"] / MB for r in rows], "s--", label="peak, fixed sampled")
            ax1.plot(x, [r["rss_live"] / MB for r in rows], "^:", label="live at end")
    streamed = [r for r in memory if not r["held"]]
    counts = [r["clients"] for r in streamed]
    ax2.plot(counts, [r["round_part_s"] for r in streamed], "o-", label="10% sampled")
    ax2.plot(
        counts,
        [r["round_fixed_s"] for r in streamed],
        "s-",
        label=f"{streamed[0]['sampled_fixed']} sampled",
    )
    for ax, ylabel in ((ax1, "RSS (MB)"), (ax2, "seconds per round")):
        ax.set_xscale("log")
        ax.set_xlabel("clients")
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("OmniFM on one machine: memory and time against the number of clients")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", nargs="+", type=int, default=[50, 200, 1000])
    p.add_argument(
        "--held",
        nargs="*",
        type=int,
        default=[200, 1000],
        help="counts also run with results held until the round ends",
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds of each kind per count")
    p.add_argument("--fixed", type=int, default=10, help="sampled clients of the fixed rounds")
    p.add_argument("--steps", type=int, default=2, help="local steps per sampled client")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--parts", nargs="+", default=["memory", "accuracy", "flower"])
    p.add_argument("--accuracy-clients", type=int, default=200)
    p.add_argument("--accuracy-rounds", type=int, default=40)
    p.add_argument("--accuracy-steps", type=int, default=5, help="local steps, accuracy runs")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--flower-rounds", type=int, default=2)
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    p.add_argument("--out", default="/tmp/omnifm_scale")
    p.add_argument("--result", type=Path, default=HERE / "scale.md")
    p.add_argument("--note", action="append", default=[], help="a line for the Machine notes")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data = args.data.resolve()
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    if not (args.data / "medmnist").is_dir():
        raise SystemExit(f"no MedMNIST files in {args.data / 'medmnist'}; pass --data")
    args.passed = [  # what a worker needs of this command's settings
        f"--rounds={args.rounds}",
        f"--fixed={args.fixed}",
        f"--steps={args.steps}",
        f"--backbone={args.backbone}",
        f"--threads={args.threads}",
        f"--data={args.data}",
        f"--out={args.out}",
    ]
    record = RunRecord.begin("benchmarks/scale.py", argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    memory, accuracy, flower = [], [], []
    if "memory" in args.parts:
        for n in args.counts:
            memory.append(run_worker(n, False, args))
            if n in args.held:
                memory.append(run_worker(n, True, args))
    n = args.accuracy_clients
    budget = [
        f"--federation.rounds={args.accuracy_rounds}",
        f"--trainer.max_steps={args.accuracy_steps}",
    ]
    if "accuracy" in args.parts:
        for method in args.methods:
            extra = METHODS[method]
            accuracy.append(
                fit(
                    f"{method}-{n}",
                    [f"--federation.strategy={method}", *extra, *budget],
                    n,
                    args,
                    env,
                )
            )
    if "flower" in args.parts:
        rounds = [f"--federation.rounds={args.flower_rounds}", f"--trainer.max_steps={args.steps}"]
        for backend in ("inprocess", "flower"):
            flower.append(
                fit(
                    f"flower-{backend}-{n}",
                    [f"--federation.backend={backend}", *rounds],
                    n,
                    args,
                    env,
                )
            )
    args.result.write_text(markdown(args, memory, accuracy, flower, record))
    if memory:
        plot(memory, args.result.with_suffix(".png"))
    print(f"wrote {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
