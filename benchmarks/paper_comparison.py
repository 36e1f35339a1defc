"""The paper's comparisons on real data: OmniFM against the federated baselines, per task.

Each run is the ``omnifm fit`` command on a recipe with a few overrides (method, participation,
seed, budget), started as a subprocess, so every number here is reproducible by one command
printed in the result file. Runs already finished in ``--out`` are reused, so an interrupted
suite resumes where it stopped. The result file ``<suite>.md`` beside this script holds a table
of mean client test metrics (mean +- std over seeds), the per-method commands, the machine and
the wall time, a table of the first metric per data source, and ``<suite>.png`` the
validation metric across rounds. ``--jobs N`` runs N runs at once, the cores split between them.

Methods: the baselines (FedAvg, FedProx, FedPer, FedBN, FedRep, Ditto, SCAFFOLD, MOON, FedDyn,
GPFL, FedAvgM, FedAdam, FedYogi) train the plain backbone and head
(``stack: null``), as in the paper; OmniFM adds the stack; the ablations switch one OmniFM
component off; Bicubic (super-resolution suites) is the untrained model.

Example:
    python benchmarks/paper_comparison.py classification --seeds 0 1 2 --participation 0.2 1.0 \\
        --ablations --rounds 5 --steps 8 --jobs 2
    python benchmarks/paper_comparison.py segmentation --jobs 2
    python benchmarks/paper_comparison.py quickstart --methods FedAvg OmniFM --rounds 1 \\
        --steps 1 --extra --model.init_args.backbone=test_resnet --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _machine import available_cores  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLAIN = ["--model.init_args.stack=null"]
STACK = "--model.init_args.stack.init_args"
METHODS: dict[str, list[str]] = {
    # super-resolution's reference: the untrained model, whose zero-initialised head makes it
    # exactly bicubic interpolation (one round of zero local steps, then the test)
    "Bicubic": [
        "--federation.strategy=FedAvg",
        *PLAIN,
        "--federation.rounds=1",
        "--trainer.max_steps=0",
    ],
    "FedAvg": ["--federation.strategy=FedAvg", *PLAIN],
    "FedProx": ["--federation.strategy=FedProx", *PLAIN],
    "FedPer": ["--federation.strategy=FedPer", *PLAIN],
    "FedBN": ["--federation.strategy=FedBN", *PLAIN],
    "FedRep": ["--federation.strategy=FedRep", *PLAIN],
    "Ditto": ["--federation.strategy=Ditto", *PLAIN],
    "SCAFFOLD": ["--federation.strategy=SCAFFOLD", *PLAIN],
    "MOON": ["--federation.strategy=MOON", *PLAIN],
    "FedDyn": ["--federation.strategy=FedDyn", *PLAIN],
    "GPFL": ["--federation.strategy=GPFL", *PLAIN],
    # server rate 0.1 with momentum 0.9: an effective server step of 1 (Hsu et al.'s
    # lr / (1 - momentum)); the default rate 1.0 diverged here at round 39
    "FedAvgM": ["--federation.strategy=FedAvgM", "--federation.strategy.lr=0.1", *PLAIN],
    # server rate 0.01: the best of Reddi et al.'s grid for FedAdam and FedYogi on image tasks
    # (Flower's default 0.1 moves every weight by up to 0.1 a round)
    "FedAdam": ["--federation.strategy=FedAdam", "--federation.strategy.eta=0.01", *PLAIN],
    "FedYogi": ["--federation.strategy=FedYogi", *PLAIN],
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


DENSE = ("FedAvg", "FedPer", "OmniFM")
SR = ("Bicubic", *DENSE)
SUITES: dict[str, Suite] = {
    # generated phantoms, no files needed: to try the driver anywhere (and its smoke test)
    "quickstart": Suite("recipes/quickstart.yaml", ("test/acc", "test/f1"), "val/acc"),
    "classification": Suite("recipes/classification.yaml", ("test/acc", "test/f1"), "val/acc"),
    "super_resolution_x2": Suite(
        "recipes/super_resolution.yaml", ("test/psnr", "test/ssim"), "val/psnr", SR
    ),
    "super_resolution_x4": Suite(
        "recipes/super_resolution.yaml",
        ("test/psnr", "test/ssim"),
        "val/psnr",
        SR,
        ["--model.init_args.scale=4", "--data=datamodules/breakhis_x4.yaml"],
    ),
    "segmentation": Suite(
        "recipes/segmentation.yaml", ("test/dice", "test/iou"), "val/dice", DENSE
    ),
    "classification_3d": Suite(
        "recipes/classification_3d.yaml", ("test/acc", "test/auroc"), "val/auroc", DENSE
    ),
    "segmentation_3d": Suite(
        "recipes/segmentation_3d.yaml",
        ("test/dice_wt", "test/dice_tc", "test/dice_et"),
        "val/dice",
        DENSE,
    ),
    "vqa": Suite(
        "recipes/vqa.yaml", ("test/acc", "test/acc_closed", "test/acc_open"), "val/acc", DENSE
    ),
    "fusion": Suite(
        "recipes/fusion.yaml", ("test/vif", "test/ssim_mri", "test/ssim_partner"), "val/vif", DENSE
    ),
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
    # the method's overrides win over the suite's and the budget (Bicubic: zero steps), the
    # user's --extra over everything
    return [*cmd, *suite.overrides, *METHODS[method], *args.extra]


def run_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out) / args.suite / name / "version_0"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_one(cmd: list[str], folder: Path, log: Path, threads: int) -> float:
    """Run ``cmd`` with ``threads`` torch threads unless ``folder`` already holds its results;
    return the wall seconds."""
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
            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)},
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    (folder / "wall_s.txt").write_text(f"{wall:.1f}")
    return wall


def mean_row(folder: Path) -> dict[str, str]:
    return next(r for r in read_csv(folder / "results.csv") if r["client"] == "mean")


def suite_wall(folder: Path, seconds: float, started: dt.datetime, ran: bool) -> tuple[float, str]:
    """Wall seconds of the calls that ran runs of this suite and when the first began, kept in
    ``folder/suite_wall.json``: redrawing the table from finished runs keeps the time."""
    path = folder / "suite_wall.json"
    past = json.loads(path.read_text()) if path.is_file() else {}
    total = past.get("seconds", 0.0) + (seconds if ran else 0.0)
    first = past.get("started", f"{started:%Y-%m-%d %H:%M}")
    if ran:
        path.write_text(json.dumps({"seconds": total, "started": first}))
    return total, first


def group_scores(folder: Path, metric: str) -> dict[str, float]:
    """``metric`` averaged over the sites of each data source (``breastmnist-0`` ->
    ``breastmnist``), to show which hospitals a method serves and which it fails."""
    scores: dict[str, list[float]] = {}
    for row in read_csv(folder / "results.csv"):
        if row["client"] != "mean":
            scores.setdefault(re.sub(r"-\d+$", "", row["client"]), []).append(float(row[metric]))
    return {group: statistics.mean(values) for group, values in scores.items()}


def curve(folder: Path, metric: str) -> list[tuple[int, float]]:
    """Mean over clients of ``metric`` per validated round."""
    rows = [r for r in read_csv(folder / "history.csv") if r["client"] == "mean" and r[metric]]
    return [(int(r["round"]), float(r[metric])) for r in rows]


def last_fifth_change(runs: list[list[tuple[int, float]]]) -> float | None:
    """How much the seed-mean validation curve moved over the last fifth of the rounds (its
    last value minus its value where the last fifth starts); ``None`` for short curves. The
    protocol calls a suite converged when this is under 0.01 for the best method."""
    if not runs or len(runs[0]) < 5:
        return None
    n = min(len(run) for run in runs)
    mean = [statistics.mean(run[i][1] for run in runs) for i in range(n)]
    return mean[-1] - mean[n - 1 - max(1, n // 5)]


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def plot(suite: Suite, curves: dict[tuple[str, float], list[list[tuple[int, float]]]], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
    parser.add_argument(
        "--ablation-seeds", nargs="+", type=int, default=None, help="default: --seeds"
    )
    parser.add_argument("--participation", nargs="+", type=float, default=[1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rounds", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=None, help="local steps per client round")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, the cores split between them"
    )
    parser.add_argument("--out", default="/tmp/omnifm_bench", help="run folders")
    parser.add_argument("--result", default=None, help="markdown file (default: beside script)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more overrides")
    args = parser.parse_args()
    record = RunRecord.begin(__file__)
    suite = SUITES[args.suite]
    methods = list(args.methods or suite.methods)
    plan = [(m, p, s) for m in methods for p in args.participation for s in args.seeds]
    if args.ablations:
        seeds = args.ablation_seeds or args.seeds
        plan += [(m, args.ablation_participation, s) for m in ABLATIONS for s in seeds]
    pending = any(not (run_dir(args, run_name(*job)) / "results.csv").is_file() for job in plan)
    started = dt.datetime.now(dt.UTC)
    total = time.perf_counter()
    results: dict[tuple[str, float], list[dict[str, str]]] = {}
    curves: dict[tuple[str, float], list[list[tuple[int, float]]]] = {}
    walls: dict[tuple[str, float], list[float]] = {}
    groups: dict[tuple[str, float], list[dict[str, float]]] = {}
    commands: dict[tuple[str, float], str] = {}
    threads = max(1, available_cores() // args.jobs)

    def launch(i: int, method: str, part: float, seed: int) -> float:
        cmd = command(suite, method, part, seed, args)
        name = run_name(method, part, seed)
        folder = run_dir(args, name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.write(f"[{i}/{len(plan)}] {shlex.join(cmd)}\n")  # one write: jobs print too
        sys.stdout.flush()
        return run_one(cmd, folder, folder.parent.parent / f"{name}.log", threads)

    with ThreadPoolExecutor(args.jobs) as pool:  # each job is a subprocess
        futures = [pool.submit(launch, i, *job) for i, job in enumerate(plan, 1)]
        walls_in_order = [f.result() for f in futures]
    for (method, part, seed), wall in zip(plan, walls_in_order, strict=True):
        folder = run_dir(args, run_name(method, part, seed))
        key = (method, part)
        results.setdefault(key, []).append(mean_row(folder))
        curves.setdefault(key, []).append(curve(folder, suite.curve))
        walls.setdefault(key, []).append(wall)
        groups.setdefault(key, []).append(group_scores(folder, suite.metrics[0]))
        commands.setdefault(key, shlex.join(command(suite, method, part, "SEED", args)))
    elapsed, started_at = suite_wall(
        Path(args.out) / args.suite, time.perf_counter() - total, started, pending
    )

    result = Path(args.result) if args.result else HERE / f"{args.suite}.md"
    header = [
        "method",
        "participation",
        "seeds",
        *suite.metrics,
        "val change, last fifth",
        "wall s / run",
    ]
    lines = [
        f"# {args.suite}: OmniFM against the baselines",
        "",
        "Mean client test metrics at the last round, mean ± std over seeds; `val change, last "
        f"fifth`: how much the seed-mean {suite.curve} moved over the last fifth of the rounds "
        "(converged: under 0.01 for the best method):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (method, part), rows in results.items():
        cells = [fmt([float(r[m]) for r in rows]) for m in suite.metrics]
        wall = statistics.mean(walls[(method, part)])
        change = last_fifth_change(curves[(method, part)])
        moved = "-" if change is None else f"{change:+.4f}"
        lines.append(
            f"| {method} | {part:g} | {len(rows)} | "
            + " | ".join(cells)
            + f" | {moved} | {wall:.0f} |"
        )
    names = list(next(iter(groups.values()))[0]) if groups else []
    lines += [
        "",
        f"{suite.metrics[0]} per data source (mean over its sites, then over seeds):",
        "",
        "| method | participation | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for (method, part), runs in groups.items():
        cells = [fmt([run[n] for run in runs]) for n in names]
        lines.append(f"| {method} | {part:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"![{suite.curve} across rounds]({result.stem}.png)",
        "",
        "Commands (SEED = each seed):",
        "",
    ]
    lines += [f"- {m} @ {p:g}: `{c}`" for (m, p), c in commands.items()]
    lines += [
        "",
        *record.footer(
            threads=f"{threads} per run, {args.jobs} run(s) at once",
            wall=elapsed,
            wall_note=f"the suite's, summed over the calls that ran its runs since {started_at} "
            "UTC; a call that only reuses finished runs adds nothing",
        ),
    ]
    result.write_text("\n".join(lines))
    plot(suite, curves, result.with_suffix(".png"))
    print(f"wrote {result} and {result.with_suffix('.png')} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
