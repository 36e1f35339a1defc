"""Benchmark: the same small federation in process and on Flower, wall time as a ratio.

One recipe (phantom clients, a small classifier with the OmniFM stack, R rounds of S local
steps, validation only after the last round) runs three ways, each as its own
``omnifm fit`` process, one after the other:

* in process: ``omnifm fit --config RECIPE`` (the default backend);
* Flower simulation: ``--federation.backend flower`` (Ray, one simulated node per client);
* Flower deployment: a SuperLink and one SuperNode per client started on loopback first
  (``omnifm.federated.flower.LocalDeployment``), then ``--federation.backend flower
  --federation.flower.superlink NAME`` submits the run (``flwr run``).

Timed per way: the whole command (process start to exit: imports, Ray start or submission,
rounds, test) and, from the time its log lines arrive, the span from the first round's line
to the results table (rounds + final test). Every process runs ``--threads`` torch threads
(OMP_NUM_THREADS), so the three ways also end with the same weights (checked).

Example:
    python benchmarks/flower_overhead.py --rounds 2 --clients 2
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _machine import available_cores, load_average  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py

try:
    import omnifm  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from omnifm.federated.checkpoint import load_checkpoint
from omnifm.federated.flower import LocalDeployment

MODALITIES = ("ct", "mri", "xray", "ultrasound")
MODES = ("inprocess", "simulation", "deployment")
LINK = "bench"


def write_recipe(args: argparse.Namespace, folder: Path) -> Path:
    """The small federation: ``--clients`` phantom sites with ``steps * batch`` images each."""
    clients = [
        {
            "name": f"c{i}",
            "data": {
                "class_path": "omnifm.datamodules.PhantomDataModule",
                "init_args": {
                    "modality": MODALITIES[i % len(MODALITIES)],
                    "size": args.size,
                    "num_train": args.steps * args.batch,
                    "num_val": args.batch,
                    "num_test": args.batch,
                    "seed": i,
                },
            },
        }
        for i in range(args.clients)
    ]
    stack = {"spectral_dim": args.spectral_dim, "low_pass_size": args.low_pass, "num_layers": 1}
    recipe = {
        "seed_everything": 0,
        "model": {
            "class_path": "omnifm.tasks.ClassificationTask",
            "init_args": {
                "backbone": args.backbone,
                "embed_dim": args.embed_dim,
                "stack": {"class_path": "omnifm.blocks.OmniFMStack", "init_args": stack},
            },
        },
        "data": {
            "class_path": "omnifm.datamodules.FederatedDataModule",
            "init_args": {"in_channels": 1, "batch_size": args.batch, "clients": clients},
        },
        "trainer": {"max_steps": args.steps, "accelerator": "cpu"},
        "federation": {
            "rounds": args.rounds,
            "strategy": "OmniFM",
            "eval_every": args.rounds,
            "name": "bench",
            "bank": {"capacity": 64, "prototypes_per_client": 4},
        },
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_fit(command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``command``, timestamping its output lines; seconds of the whole command and of
    the rounds + test span."""
    start = time.perf_counter()
    first_round = table = None
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            now = time.perf_counter()
            if first_round is None and "round 1/" in line:
                first_round = now
            if "test results (" in line:
                table = now
        code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0 or first_round is None or table is None:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {code}); see {log}")
    return {"wall": wall, "rounds": table - first_round}


def compare(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference of shared weights and bank vectors of two checkpoints."""
    diffs = [
        (a["server"]["shared"][k].float() - v.float()).abs().max().item()
        for k, v in b["server"]["shared"].items()
        if v.numel()
    ]
    bank_a, bank_b = a["server"]["bank"]["vectors"], b["server"]["bank"]["vectors"]
    diffs.append(float("inf") if bank_a.shape != bank_b.shape else (bank_a - bank_b).abs().max())
    return float(max(diffs))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = RunRecord.begin(__file__, argv)
    print(f"load {record.load_start}; modes {', '.join(args.modes)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="omnifm-flower-bench-") as tmp:
        folder = Path(tmp)
        recipe = write_recipe(args, folder)
        base = [sys.executable, "-m", "omnifm.cli", "fit", "--config", str(recipe)]
        states = {}
        for mode in args.modes:
            out = folder / mode
            command = [*base, f"--federation.output={out}"]
            print(f"{mode} ...", flush=True)
            if mode == "inprocess":
                rows[mode] = run_fit(command, env, folder / f"{mode}.log")
            elif mode == "simulation":
                command.append("--federation.backend=flower")
                rows[mode] = run_fit(command, env, folder / f"{mode}.log")
            else:
                start = time.perf_counter()
                names = [f"c{i}" for i in range(args.clients)]
                threads = {"OMP_NUM_THREADS": str(args.threads)}
                with LocalDeployment(folder / "processes", names, LINK, threads) as link:
                    started = time.perf_counter() - start
                    command += [
                        "--federation.backend=flower",
                        f"--federation.flower.superlink={LINK}",
                    ]
                    rows[mode] = run_fit(command, link.env, folder / f"{mode}.log")
                rows[mode]["start"] = started
            states[mode] = load_checkpoint(out / "bench" / "version_0" / "checkpoints" / "last.pt")
            print(f"  {rows[mode]}", flush=True)
        if "inprocess" in states:
            for mode, state in states.items():
                rows[mode]["diff"] = compare(state, states["inprocess"])
    args.out.write_text(markdown(args, rows, record))
    print(f"wrote {args.out} in {record.wall():.1f} s (load {load_average()})")
    return 0


def markdown(args: argparse.Namespace, rows: dict[str, dict[str, float]], record: RunRecord) -> str:
    base = rows.get("inprocess")
    names = {
        "inprocess": "in process",
        "simulation": "Flower simulation (Ray)",
        "deployment": "Flower deployment (loopback)",
    }
    lines = [
        "# Flower overhead benchmark",
        "",
        f"The same federation ({args.clients} phantom clients, {args.rounds} rounds of "
        f"{args.steps} local steps, batch {args.batch}, {args.size}x{args.size} images, "
        f"`{args.backbone}` with the OmniFM stack, validation after the last round only) in "
        "process and on Flower, each way as its own `omnifm fit` process.",
        "",
        "| way | command (s) | ratio to in process | rounds + test (s) | ratio to in process "
        "| max abs diff of weights and bank vs in process |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, r in rows.items():
        ratio = f"{r['wall'] / base['wall']:.2f}" if base else "-"
        ratio_rounds = f"{r['rounds'] / base['rounds']:.2f}" if base else "-"
        diff = f"{r['diff']:.3g}" if "diff" in r else "-"
        lines.append(
            f"| {names[mode]} | {r['wall']:.1f} | {ratio} | {r['rounds']:.1f} "
            f"| {ratio_rounds} | {diff} |"
        )
    busiest = max(float(x) for x in f"{record.load_start} / {load_average()}".split(" / "))
    if busiest > available_cores():
        lines += [
            "",
            f"**Taken under load**: the load average reached {busiest:.1f} on "
            f"{available_cores()} cores (other jobs shared the machine); the seconds, and the "
            "deployment's most (its per-message processes compete for the cores), are slower "
            "than on a quiet machine.",
        ]
    if "deployment" in rows:
        lines += [
            "",
            f"Starting the deployment's SuperLink and {args.clients} SuperNodes (until every "
            f"node is connected), before its command: {rows['deployment']['start']:.1f} s.",
        ]
    lines += [
        "",
        "## What is timed",
        "",
        "- command: the `omnifm fit` process from start to exit: imports, recipe, (Ray start "
        "and actors, or `flwr run` and the ServerApp process), rounds, final test.",
        "- rounds + test: from the moment the line `round 1/R` reaches the benchmark to the "
        "moment the results table does (for the deployment, through `flwr run --stream`).",
        "- in process, one model instance trains every client in turn; the simulation runs "
        "a Ray actor per CPU that keeps its imports and model between messages; the "
        "deployment starts a fresh `flwr-clientapp` process per message (Flower 1.42's "
        "SuperNode), which imports torch, Lightning and OmniFM and builds the model each time, "
        "and SuperNodes poll the SuperLink every 3 s when idle.",
        "",
        *record.footer(
            threads=f"{args.threads} per process (OMP_NUM_THREADS)",
            device="cpu, no GPU used",
            versions=("flwr", "ray"),
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="local steps per client and round")
    p.add_argument("--backbone", default="test_resnet")
    p.add_argument("--size", type=int, default=16, help="phantom image size")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--embed-dim", type=int, default=16)
    p.add_argument("--spectral-dim", type=int, default=8)
    p.add_argument("--low-pass", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every process")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = p.parse_args(argv)
    if min(args.clients, args.rounds, args.steps, args.threads) < 1:
        p.error("--clients, --rounds, --steps and --threads must be >= 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
