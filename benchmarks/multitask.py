"""What a hospital gains from a federation of many tasks: each hospital's test metric in the
many-task federation, in its own task's federation, and trained alone, on the same budget.

From one many-task recipe (default ``recipes/multitask.yaml``) the script writes and runs,
with ``omnifm fit`` in a subprocess each:

- ``many``: the recipe itself (every hospital of every task);
- ``single-<task>``: one task's model and data only (that task's hospitals);
- ``alone-<hospital>``: that hospital's data only, its task's model.

Same model settings, strategy, rounds, local steps per round and seed in all three, so the
differences are what sharing across tasks (many - single) and federating at all (many -
alone) do. Finished runs in ``--out`` are reused (an interrupted suite resumes). The result
file ``multitask.md`` beside this script has, per hospital, the test value of its task's
main metric in each setting (mean +- std over seeds), the differences with a verdict, how
much each validation curve still moved over the last fifth of the rounds, and a plot of the
validation curves (``multitask.png``).

Example:
    python benchmarks/multitask.py --seeds 0 1 --rounds 40 --jobs 2
    python benchmarks/multitask.py --recipe recipes/multitask_phantom.yaml --rounds 2 \\
        --out /tmp/smoke --extra --model.init_args.tasks.grading.init_args.backbone=test_resnet
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from _machine import available_cores  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SETTINGS = ("many", "single", "alone")


def configs(recipe: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Run name -> (recipe, hospital -> task) for the many-task run, each task's own
    federation and each hospital alone."""
    tasks = recipe["model"]["init_args"]["tasks"]
    datas = recipe["data"]["init_args"]["tasks"]
    hospitals = {
        c["name"]: task for task, data in datas.items() for c in data["init_args"]["clients"]
    }
    out = {"many": (recipe, hospitals)}

    def single(task: str, data: dict[str, Any], name: str) -> dict[str, Any]:
        federation = {**recipe["federation"], "min_clients": 1, "name": name}
        return {**recipe, "model": tasks[task], "data": data, "federation": federation}

    for task, data in datas.items():
        mine = {h: t for h, t in hospitals.items() if t == task}
        out[f"single-{task}"] = (single(task, data, f"single-{task}"), mine)
        for client in data["init_args"]["clients"]:
            alone = {**data, "init_args": {**data["init_args"], "clients": [client]}}
            name = f"alone-{client['name']}"
            out[name] = (single(task, alone, name), {client["name"]: task})
    return out


def setting(name: str) -> str:
    return name.split("-", 1)[0]


def run_one(
    name: str, recipe: dict[str, Any], seed: int, args: argparse.Namespace, threads: int
) -> Path:
    """Run ``name`` for ``seed`` unless its folder holds results; its run folder."""
    out = Path(args.out)
    folder = out / f"{name}-s{seed}" / "version_0"
    if (folder / "results.csv").is_file():
        return folder
    if folder.exists():
        raise SystemExit(f"{folder} exists without results.csv; delete it and rerun")
    path = out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [
        "fit",
        "--config",
        str(path),
        f"--seed_everything={seed}",
        f"--federation.seed={seed}",
        f"--federation.rounds={args.rounds}",
        f"--federation.output={out}",
        f"--federation.name={name}-s{seed}",
        *args.extra,
    ]
    start = time.perf_counter()
    log = out / f"{name}-s{seed}.log"
    with log.open("w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "omnifm.cli", *cmd],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)},
        )
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): omnifm {shlex.join(cmd)}; see {log}")
    (folder / "wall_s.txt").write_text(f"{time.perf_counter() - start:.1f}")
    print(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def monitors(folder: Path) -> dict[str, str]:
    """Task -> its main metric, from the run's ``metrics.yaml``."""
    declared = yaml.safe_load((folder / "metrics.yaml").read_text())
    tasks = declared.get("tasks") or {}
    return {t: v["monitor"] for t, v in tasks.items()} or {"": declared["monitor"]}


Curve = list[tuple[int, float]]  # (round, validation value)


def scores(folder: Path, metric: dict[str, str]) -> dict[str, tuple[float, Curve]]:
    """Hospital -> (test value of its task's main metric, its validation curve)."""
    history = read_csv(folder / "history.csv")
    out = {}
    for row in read_csv(folder / "results.csv"):
        if row["client"].startswith("mean"):
            continue
        key = metric[row["task"]] if "task" in row else next(iter(metric.values()))
        curve = [
            (int(r["round"]), float(r[f"val/{key}"]))
            for r in history
            if r["stage"] == "validate" and r["client"] == row["client"] and r.get(f"val/{key}")
        ]
        out[row["client"]] = (float(row[f"test/{key}"]), curve)
    return out


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def verdict(diffs: list[float], scale: float) -> str:
    """``helps``/``hurts`` where two or more seeds agree and the mean moves more than
    ``scale`` (the tasks' main metrics are all higher-is-better); ``no clear difference``
    otherwise; one seed only says which way it went."""
    mean = statistics.mean(diffs)
    if abs(mean) <= scale:
        return "no clear difference"
    if len(diffs) < 2:
        return "higher (1 seed)" if mean > 0 else "lower (1 seed)"
    if all(d > 0 for d in diffs) or all(d < 0 for d in diffs):
        return "helps" if mean > 0 else "hurts"
    return "no clear difference"


def late_change(curve: Curve) -> float | None:
    """How much a validation curve still moved over the last fifth of its rounds: its last
    value minus the last one validated at or before the round where that fifth starts (the
    previous point where none is). In rounds, not points: a run validated every 4 rounds
    also validates its last round, so its last two points can be 2 rounds apart."""
    if len(curve) < 2:
        return None
    start = curve[-1][0] - max(1, curve[-1][0] // 5)
    before = [value for r, value in curve[:-1] if r <= start] or [curve[-2][1]]
    return curve[-1][1] - before[-1]


def plot(curves: dict[str, dict[str, list[Curve]]], metric: dict[str, str], path: Path) -> None:
    from matplotlib.figure import Figure

    hospitals = list(curves)
    cols = min(4, len(hospitals))
    rows = -(-len(hospitals) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, hospital in zip(axes, hospitals, strict=False):
        task, by_setting = metric[hospital], curves[hospital]
        for i, name in enumerate(SETTINGS):
            runs = by_setting.get(name) or []
            if runs:
                n = min(len(r) for r in runs)
                mean = [statistics.mean(r[k][1] for r in runs) for k in range(n)]
                rounds = [r for r, _ in runs[0][:n]]
                ax.plot(rounds, mean, color=f"C{i}", label=name, marker="o", ms=2)
        ax.set_title(f"{hospital} (val/{task})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlabel("round")
    for ax in axes[len(hospitals) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=3, fontsize=8)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/multitask.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", default="/tmp/omnifm_multitask")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--report-only", action="store_true", help="tabulate finished runs")
    parser.add_argument("--result", default=str(HERE / "multitask.md"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    record = RunRecord.begin(__file__)
    recipe = yaml.safe_load((REPO / args.recipe).read_text())
    runs = {n: c for n, c in configs(recipe).items() if setting(n) in args.only}
    threads = max(1, available_cores() // args.jobs)
    todo = [(n, s) for n in runs for s in args.seeds]
    if not args.report_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(
                pool.map(lambda job: run_one(job[0], runs[job[0]][0], job[1], args, threads), todo)
            )
    table: dict[str, dict[str, list[float]]] = {}
    curves: dict[str, dict[str, list[Curve]]] = {}
    metric: dict[str, str] = {}
    task_of: dict[str, str] = {}
    for name, (_, hospitals) in runs.items():
        for seed in args.seeds:
            folder = Path(args.out) / f"{name}-s{seed}" / "version_0"
            if not (folder / "results.csv").is_file():
                continue
            mains = monitors(folder)
            for hospital, (test, curve) in scores(folder, mains).items():
                task = hospitals[hospital]
                task_of[hospital] = task
                metric[hospital] = mains.get(task) or next(iter(mains.values()))
                table.setdefault(hospital, {}).setdefault(setting(name), []).append(test)
                curves.setdefault(hospital, {}).setdefault(setting(name), []).append(curve)
    body = [
        "| task | hospital | metric | many tasks | own task's federation | alone | "
        "many - own task | verdict | many - alone | verdict | late change (many/own/alone) |",
        "|" + "---|" * 11,
    ]
    for hospital, values in table.items():
        many, single, alone = (values.get(s, []) for s in SETTINGS)
        # a difference counts when every seed agrees and it exceeds 1% of the value (0.01 for
        # accuracy and Dice, about 0.35 dB at 35 dB PSNR)
        scale = 0.01 * abs(statistics.mean(many)) if many else 0.0
        cells = []
        for other in (single, alone):
            if many and len(other) == len(many):
                diffs = [a - b for a, b in zip(many, other, strict=True)]
                cells += [f"{statistics.mean(diffs):+.4f}", verdict(diffs, scale)]
            else:
                cells += ["-", "-"]
        moved = []
        for s in SETTINGS:
            runs_s = curves[hospital].get(s) or []
            changes = [c for c in (late_change(r) for r in runs_s) if c is not None]
            moved.append(f"{statistics.mean(changes):+.4f}" if changes else "-")
        body.append(
            f"| {task_of[hospital]} | {hospital} | {metric[hospital]} | "
            + " | ".join(fmt(v) if v else "-" for v in (many, single, alone))
            + " | "
            + " | ".join(cells)
            + f" | {' / '.join(moved)} |"
        )
    png = Path(args.result).with_suffix(".png")
    if table:
        plot(curves, metric, png)
    seeds = ", ".join(map(str, args.seeds))
    intro = (
        f"Each hospital of `{args.recipe}` in three federations on the same budget "
        f"({args.rounds} rounds of the recipe's local steps, seeds {seeds}): all tasks "
        "together (**many tasks**), its own task's hospitals only (**own task's "
        "federation**), and **alone** (its own data, its task's model). Test values of the "
        "hospital's main metric (all higher is better); a verdict says helps or hurts only where "
        "two or more seeds agree and the mean difference exceeds 1% of the value (one seed: "
        "which way it went, with no estimate of noise). The last column is how much each "
        "validation curve still moved over the last fifth of its rounds (mean over seeds). "
        f"Curves: `{png.name}`."
    )
    record.write(
        Path(args.result),
        "Many tasks in one federation: what each hospital gains",
        intro,
        body,
        threads=f"{threads} per run ({args.jobs} at once)",
        device="cpu",
    )


if __name__ == "__main__":
    main()
