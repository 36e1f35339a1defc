"""The paper's comparisons on real data: OmniFM against the federated baselines, per task.

Each run is the ``omnifm fit`` command on a recipe with a few overrides (method, participation,
seed, budget), started as a subprocess, so every number here is reproducible by one command
printed in the result file. Runs already finished in ``--out`` are reused, so an interrupted
suite resumes where it stopped. The result file ``<suite>.md`` beside this script holds a table
of mean client test metrics (mean +- std over seeds), the per-method commands, the machine and
the wall time, and ``<suite>.png`` the validation metric across rounds.

Methods: the baselines (FedAvg, FedProx, FedPer, FedBN) train the plain backbone and head
(``stack: null``), as in the paper; OmniFM adds the stack; the ablations switch one OmniFM
component off.

Example:
    python benchmarks/paper_comparison.py classification --seeds 0 1 2 --participation 0.2 1.0
    python benchmarks/paper_comparison.py classification --methods FedAvg OmniFM --seeds 0 \\
        --rounds 1 --steps 1 --extra --model.init_args.backbone=test_resnet --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _machine import available_cores, cpu_model, load_average  # benchmarks/_machine.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLAIN = ["--model.init_args.stack=null"]
STACK = "--model.init_args.stack.init_args"
METHODS: dict[str, list[str]] = {
    "FedAvg": ["--federation.strategy=FedAvg", *PLAIN],
    "FedProx": ["--federation.strategy=FedProx", *PLAIN],
    "FedPer": ["--federation.strategy=FedPer", *PLAIN],
    "FedBN": ["--federation.strategy=FedBN", *PLAIN],
    "OmniFM": ["--federation.strategy=OmniFM"],
    "OmniFM w/o GSKR": ["--federation.strategy=OmniFM", f"{STACK}.gskr=false"],
    "OmniFM w/o ECA": ["--federation.strategy=OmniFM", f"{STACK}.eca=false"],
    "OmniFM w/o PSP": ["--federation.strategy=OmniFM", f"{STACK}.psp=false"],
    "OmniFM w/o SPAlign": ["--federation.strategy=OmniFM", f"{STACK}.spalign=false"],
}
ABLATIONS = [m for m in METHODS if m.startswith("OmniFM w/o")]


@dataclass(frozen=True)
class Suite:
    """One task's comparison: its recipe, the metrics to report and the curve to plot."""

    recipe: str
    metrics: tuple[str, ...]
    curve: str
    methods: tuple[str, ...] = ("FedAvg", "FedProx", "FedPer", "FedBN", "OmniFM")
    overrides: list[str] = field(default_factory=list)


SUITES: dict[str, Suite] = {
    "classification": Suite("recipes/classification.yaml", ("test/acc", "test/f1"), "val/acc"),
}


def run_name(method: str, participation: float, seed: int | str) -> str:
    slug = method.replace("OmniFM w/o ", "OmniFM-no").replace(" ", "")
    return f"{slug}_p{participation:g}_s{seed}"


def command(
    suite: Suite, method: str, participation: float, seed: int | str, args: argparse.Namespace
) -> list[str]:
    """The ``omnifm fit`` command of one run (list of arguments)."""
    cmd = [
        "omnifm",
        "fit",
        "--config",
        suite.recipe,
        *METHODS[method],
        f"--federation.participation={participation:g}",
        f"--federation.seed={seed}",
        f"--seed_everything={seed}",
        f"--federation.output={args.out}/{args.suite}",
        f"--federation.name={run_name(method, participation, seed)}",
    ]
    if args.rounds:
        cmd.append(f"--federation.rounds={args.rounds}")
    if args.steps:
        cmd.append(f"--trainer.max_steps={args.steps}")
    return [*cmd, *suite.overrides, *args.extra]


def run_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out) / args.suite / name / "version_0"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_one(cmd: list[str], folder: Path, log: Path) -> float:
    """Run ``cmd`` unless ``folder`` already holds its results; return the wall seconds."""
    done = folder / "results.csv"
    if done.is_file():
        return (
            float((folder / "wall_s.txt").read_text()) if (folder / "wall_s.txt").is_file() else 0
        )
    if folder.exists():  # an interrupted run: start it again from scratch
        raise SystemExit(f"{folder} exists without results.csv; delete it and rerun the suite")
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "omnifm.cli", *cmd[1:]],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    (folder / "wall_s.txt").write_text(f"{wall:.1f}")
    return wall


def mean_row(folder: Path) -> dict[str, str]:
    return next(r for r in read_csv(folder / "results.csv") if r["client"] == "mean")


def curve(folder: Path, metric: str) -> list[tuple[int, float]]:
    """Mean over clients of ``metric`` per validated round."""
    rows = [r for r in read_csv(folder / "history.csv") if r["client"] == "mean" and r[metric]]
    return [(int(r["round"]), float(r[metric])) for r in rows]


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def plot(suite: Suite, curves: dict[tuple[str, float], list[list[tuple[int, float]]]], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = sorted({p for _, p in curves})
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        for (method, p), runs in curves.items():
            if p != part or not runs:
                continue
            rounds = [r for r, _ in runs[0]]
            mean = [statistics.mean(run[i][1] for run in runs) for i in range(len(rounds))]
            ax.plot(rounds, mean, marker="o", ms=3, label=method)
        ax.set(title=f"participation {part:g}", xlabel="round", ylabel=f"mean client {suite.curve}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    parser.add_argument("--ablations", action="store_true", help="also the OmniFM ablations")
    parser.add_argument("--ablation-participation", type=float, default=1.0)
    parser.add_argument("--participation", nargs="+", type=float, default=[1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rounds", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=None, help="local steps per client round")
    parser.add_argument("--out", default="/tmp/omnifm_bench", help="run folders")
    parser.add_argument("--result", default=None, help="markdown file (default: beside script)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more overrides")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    methods = list(args.methods or suite.methods)
    plan = [(m, p, s) for m in methods for p in args.participation for s in args.seeds]
    if args.ablations:
        plan += [(m, args.ablation_participation, s) for m in ABLATIONS for s in args.seeds]
    started = dt.datetime.now(dt.UTC)
    total = time.perf_counter()
    results: dict[tuple[str, float], list[dict[str, str]]] = {}
    curves: dict[tuple[str, float], list[list[tuple[int, float]]]] = {}
    walls: dict[tuple[str, float], list[float]] = {}
    commands: dict[tuple[str, float], str] = {}
    for i, (method, part, seed) in enumerate(plan, 1):
        cmd = command(suite, method, part, seed, args)
        folder = run_dir(args, run_name(method, part, seed))
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{i}/{len(plan)}] {shlex.join(cmd)}", flush=True)
        wall = run_one(cmd, folder, folder.parent.with_suffix(".log"))
        key = (method, part)
        results.setdefault(key, []).append(mean_row(folder))
        curves.setdefault(key, []).append(curve(folder, suite.curve))
        walls.setdefault(key, []).append(wall)
        commands.setdefault(key, shlex.join(command(suite, method, part, "SEED", args)))
    elapsed = time.perf_counter() - total

    result = Path(args.result) if args.result else HERE / f"{args.suite}.md"
    header = ["method", "participation", "seeds", *suite.metrics, "wall s / run"]
    lines = [
        f"# {args.suite}: OmniFM against the baselines",
        "",
        f"Command: `python benchmarks/paper_comparison.py {shlex.join(sys.argv[1:])}`",
        "",
        f"Machine: {cpu_model()}, {available_cores()} cores usable, load average at the end "
        f"{load_average()}; started {started:%Y-%m-%d %H:%M} UTC; suite wall time "
        f"{elapsed / 60:.1f} min (runs reused from an earlier call count 0).",
        "",
        "Mean client test metrics at the last round, mean ± std over seeds:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (method, part), rows in results.items():
        cells = [fmt([float(r[m]) for r in rows]) for m in suite.metrics]
        wall = statistics.mean(walls[(method, part)])
        lines.append(
            f"| {method} | {part:g} | {len(rows)} | " + " | ".join(cells) + f" | {wall:.0f} |"
        )
    lines += [
        "",
        f"![{suite.curve} across rounds]({result.stem}.png)",
        "",
        "Commands (SEED = each seed):",
        "",
    ]
    lines += [f"- {m} @ {p:g}: `{c}`" for (m, p), c in commands.items()]
    result.write_text("\n".join(lines) + "\n")
    plot(suite, curves, result.with_suffix(".png"))
    print(f"wrote {result} and {result.with_suffix('.png')} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
