"""``omnifm report``: a results table and metric curves from finished run folders.

A run folder (``output/name/version_N``) holds ``history.csv`` (validation metrics of every
client and their mean after each round, and the final test metrics), ``config.yaml`` (the
recipe) and ``metrics.yaml`` (the task's main metric and, per metric, whether higher or lower
is better). The report gives, per run, client and metric, the best validation value and its round,
the last validation value and its round, and the test value; it writes that table as markdown
and CSV, and one PNG per metric with a panel per client (and the mean) and a line per run.
A run of many tasks (``task`` column) is reported task by task, each with its own mean.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RunLog",
    "format_bank_health",
    "format_markdown",
    "format_privacy",
    "load_run",
    "main",
    "plot_metric",
    "summarize",
    "write",
]

TEXT_COLUMNS = ("stage", "task", "client", "modality", "error")
LOWER_IS_BETTER = ("loss", "spalign", "mae", "mse", "rmse", "error", "hd95", "lpips")
LOSS_PARTS = ("task_loss", "spalign")  # left out of the default metrics: parts of "loss"
STAGE_PREFIX = {"validate": "val/", "test": "test/"}
SUMMARY_COLUMNS = (
    "run",
    "task",
    "client",
    "modality",
    "metric",
    "better",
    "best",
    "best_round",
    "last",
    "last_round",
    "test",
)


def lower_is_better(metric: str, runs: Sequence[RunLog] = ()) -> bool:
    """Whether smaller values of ``metric`` are better: as the runs' tasks declared it
    (``metrics.yaml``); by its name (a loss, an error) for runs written before that file."""
    modes = (run.mode_of(metric) for run in runs)
    mode = next((m for m in modes if m is not None), None)
    return mode == "min" if mode is not None else metric.endswith(LOWER_IS_BETTER)


@dataclass
class RunLog:
    """The history of one run: rows of ``history.csv`` with numbers parsed, its label, and
    the task's declared main metric (``monitor``) and metric directions (``modes``)."""

    path: Path
    label: str
    rows: list[dict[str, Any]]
    monitor: str | None = None
    modes: dict[str, str] = field(default_factory=dict)
    monitors: set[str] = field(default_factory=set)  # every task's main metric

    def task(self, client: str) -> str:
        """The task of ``client`` (``""`` in a run of one task)."""
        return next((str(r.get("task") or "") for r in self.rows if r["client"] == client), "")

    def mode_of(self, metric: str) -> str | None:
        """``max`` or ``min`` as the task declared it; a per-class ``dice_1`` as ``dice``."""
        return self.modes.get(metric) or self.modes.get(re.sub(r"_\d+$", "", metric))

    def clients(self) -> list[str]:
        """Client names in the order of the run, with ``mean`` last."""
        names = list(dict.fromkeys(str(r["client"]) for r in self.rows if r["stage"] != "bank"))
        return [n for n in names if n != "mean"] + (["mean"] if "mean" in names else [])

    def modality(self, client: str) -> str:
        return next((str(r["modality"]) for r in self.rows if r["client"] == client), "")

    def metrics(self) -> list[str]:
        """Metric names without their stage prefix (``acc`` for ``val/acc``), in column order."""
        rows = (r for r in self.rows if r["stage"] in STAGE_PREFIX)
        names = (k.split("/", 1)[1] for r in rows for k in r if "/" in k)
        return list(dict.fromkeys(names))

    def bank_health(self) -> list[dict[str, Any]]:
        """The spectral bank's health rows (``stage == "bank"``), one per round."""
        return [r for r in self.rows if r["stage"] == "bank"]

    def values(self, stage: str, client: str, metric: str) -> list[tuple[int, float]]:
        """``(round, value)`` of ``metric`` for ``client`` in ``stage`` rows, in file order."""
        key = f"{STAGE_PREFIX[stage]}{metric}"
        return [
            (int(r["round"]), r[key])
            for r in self.rows
            if r["stage"] == stage and r["client"] == client and _number(r.get(key))
        ]

    def curve(self, client: str, metric: str) -> tuple[list[int], list[float]]:
        """Rounds and validation values of ``metric`` for ``client`` (NaN and gaps left out)."""
        points = dict(self.values("validate", client, metric))  # a repeated round: the latest
        rounds = sorted(points)
        return rounds, [points[k] for k in rounds]

    def test_value(self, client: str, metric: str) -> float | None:
        """The latest test value of ``metric`` for ``client``, if the run was tested."""
        values = self.values("test", client, metric)
        return values[-1][1] if values else None


def _number(value: Any) -> bool:
    return isinstance(value, float) and not math.isnan(value)


def _parse(row: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in row.items():
        if key in TEXT_COLUMNS:
            parsed[key] = value
        elif key == "round":
            if not (value or "").isdigit():
                raise ValueError(f"{path} line {line}: round {value!r} is not a round number")
            parsed[key] = int(value)
        elif value not in ("", None):
            try:
                parsed[key] = float(value)
            except ValueError:
                raise ValueError(
                    f"{path} line {line}: {key} = {value!r} is not a number; the file is "
                    "damaged or not written by omnifm"
                ) from None
    return parsed


def _run_folder(path: Path) -> Path:
    """``path`` itself when it holds ``history.csv``, else its newest ``version_N``."""
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} not found; give output/name/version_N")
    if (path / "history.csv").is_file():
        return path
    versions = [p for p in path.glob("version_*") if p.name[8:].isdigit()]
    done = [p for p in versions if (p / "history.csv").is_file()]
    if done:
        return max(done, key=lambda p: int(p.name[8:]))
    raise FileNotFoundError(
        f"{path} has no history.csv (nor a version_N folder with one); give a run folder "
        "output/name/version_N of a run that completed at least one evaluation"
    )


def _strategy(config: dict[str, Any]) -> str | None:
    federation = config.get("federation") or {}
    strategy = federation.get("strategy")
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path")
    if not isinstance(strategy, str):
        return None
    name = strategy.rsplit(".", 1)[-1]
    model = config.get("model") or {}
    init = (model.get("init_args") or {}) if isinstance(model, dict) else {}
    return f"{name}, plain backbone" if "stack" in init and init["stack"] is None else name


def _label(run: Path) -> str:
    """``strategy (name/version_N)`` from the run's ``config.yaml``; the folder names alone
    when the run has no readable config (runs started from Python without a recipe)."""
    where = f"{run.parent.name}/{run.name}"
    config_path = run / "config.yaml"
    if not config_path.is_file():
        return where
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError:
        return where
    strategy = _strategy(config) if isinstance(config, dict) else None
    return f"{strategy} ({where})" if strategy else where


def load_run(path: str | os.PathLike[str], label: str | None = None) -> RunLog:
    """Read a run folder (``output/name/version_N``, or ``output/name`` for its newest run)."""
    run = _run_folder(Path(path))
    history = run / "history.csv"
    with history.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"round", "stage", "client"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{history} lacks the columns {sorted(missing)}; it was not written by omnifm"
            )
        rows = [_parse(row, history, i) for i, row in enumerate(reader, start=2)]
    if not rows:
        raise ValueError(f"{history} has no rows yet: the run has not evaluated any round")
    declared = _declared(run / "metrics.yaml")
    modes = declared.get("modes") or {}
    monitor = declared.get("monitor")
    tasks = declared.get("tasks") or {}
    monitors = {monitor, *(t.get("monitor") for t in tasks.values())} - {None}
    return RunLog(run, label or _label(run), rows, monitor, dict(modes), monitors)


def _declared(path: Path) -> dict[str, Any]:
    """``metrics.yaml`` of a run folder; empty for runs written before it existed."""
    if not path.is_file():
        return {}
    try:
        declared = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err}); delete it to report anyway") from err
    return declared if isinstance(declared, dict) else {}


def _metrics(runs: Sequence[RunLog], metrics: Sequence[str] | None) -> list[str]:
    known = list(dict.fromkeys(m for run in runs for m in run.metrics()))
    monitors = {m for run in runs for m in run.monitors | {run.monitor}}
    # the tasks' main metrics first, then the other quality metrics, then losses (stable)
    known.sort(key=lambda m: (m not in monitors, lower_is_better(m, runs)))
    if not metrics:
        chosen = [m for m in known if m not in LOSS_PARTS]
        return chosen or known
    chosen = [m.split("/", 1)[1] if m.startswith(("val/", "test/")) else m for m in metrics]
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ValueError(f"metric(s) {unknown} not in the runs; they have: {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def summarize(runs: Sequence[RunLog], metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per run, client (and mean) and metric: best and last validation value with
    their rounds, and the test value (``None`` where absent)."""
    rows: list[dict[str, Any]] = []
    for metric in _metrics(runs, metrics):
        lower = lower_is_better(metric, runs)
        pick = min if lower else max
        for run in runs:
            for client in run.clients():
                rounds, values = run.curve(client, metric)
                test = run.test_value(client, metric)
                if not values and test is None:
                    continue
                best = pick(range(len(values)), key=values.__getitem__) if values else None
                rows.append(
                    {
                        "run": run.label,
                        "task": run.task(client),
                        "client": client,
                        "modality": run.modality(client),
                        "metric": metric,
                        "better": "lower" if lower else "higher",
                        "best": values[best] if best is not None else None,
                        "best_round": rounds[best] if best is not None else None,
                        "last": values[-1] if values else None,
                        "last_round": rounds[-1] if values else None,
                        "test": test,
                    }
                )
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    return sorted(rows, key=lambda r: tasks.index(r["task"]))  # task by task (stable)


BANK_COLUMNS = {
    "entries": "bank/entries",
    "erank": "bank/erank",
    "purity": "bank/purity",
    "chance": "bank/purity_chance",
    "hit entropy": "bank/hit_entropy",
    "cos within": "bank/proto_cos_within",
    "cos across": "bank/proto_cos_across",
    "token cos": "bank/token_cos_within",
}


def format_bank_health(runs: Sequence[RunLog]) -> str:
    """The spectral bank's health at the first and last round of each run (markdown; empty
    for runs without a bank). Prototype cosines within one modality should stay clearly
    above those across modalities, and purity above chance: otherwise the spectral tokens
    carry no information."""
    lines = [
        "### spectral bank health (cosines of uploaded prototypes; purity: share of "
        "retrieved entries of the client's own modality)",
        "",
        "| run | round | " + " | ".join(BANK_COLUMNS) + " |",
        "|" + "---|" * (len(BANK_COLUMNS) + 2),
    ]
    found = False
    for run in runs:
        health = run.bank_health()
        for row in [health[0], health[-1]] if len(health) > 1 else health:
            found = True
            cells = [_cell(row.get(key)) for key in BANK_COLUMNS.values()]
            lines.append(f"| {run.label} | {row['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if found else ""


def format_privacy(runs: Sequence[RunLog]) -> str:
    """Each client's epsilon spent on private spectral uploads and on DP-SGD by the end of
    each run, and the round of its last private release (markdown; empty for runs without
    ``bank.privacy`` or ``dp_sgd``)."""
    lines = [
        "### privacy (epsilon spent)",
        "",
        "| run | client | on spectral uploads | on DP-SGD | last release (round) |",
        "|---|---|---|---|---|",
    ]
    found = False
    for run in runs:
        latest: dict[str, dict[str, Any]] = {}
        for r in run.rows:
            if r["stage"] == "privacy":
                spent = {k: v for k, v in r.items() if k.startswith("privacy/") and v is not None}
                latest.setdefault(r["client"], {}).update(spent, round=r["round"])
        for client, row in latest.items():
            found = True
            uploads, training = (
                _cell(row.get(k)) for k in ("privacy/epsilon", "privacy/dp_epsilon")
            )
            lines.append(f"| {run.label} | {client} | {uploads} | {training} | {row['round']} |")
    return "\n".join(lines) + "\n" if found else ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as markdown: one table per metric; task by task in runs of many tasks."""
    tasks = list(dict.fromkeys(r.get("task", "") for r in rows))
    if tasks and tasks != [""]:
        sections = []
        for task in tasks:
            mine = [{**r, "task": ""} for r in rows if r.get("task", "") == task]
            sections.append(f"## task {task or '(none)'}\n\n{format_markdown(mine)}")
        return "\n".join(sections)
    parts: list[str] = []
    header = ["run", "client", "modality", "best", "best round", "last", "last round", "test"]
    keys = ["run", "client", "modality", "best", "best_round", "last", "last_round", "test"]
    for metric in dict.fromkeys(r["metric"] for r in rows):
        better = next(r["better"] for r in rows if r["metric"] == metric)
        lines = [f"### {metric} ({better} is better; best and last over validation rounds)", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in rows:
            if row["metric"] == metric:
                lines.append("| " + " | ".join(_cell(row[k]) for k in keys) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_metric(runs: Sequence[RunLog], metric: str) -> Figure:
    """Validation ``metric`` across rounds: a panel per client (and the mean), a line per run;
    a star marks each run's test value after its last round."""
    from matplotlib.figure import Figure  # headless: a Figure needs no GUI backend
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    clients = [  # those with the metric (in a run of many tasks, the clients of some tasks)
        c
        for c in dict.fromkeys(c for run in runs for c in run.clients())
        if any(run.curve(c, metric)[0] or run.test_value(c, metric) is not None for run in runs)
    ]
    cols = min(4, len(clients))
    rows = math.ceil(len(clients) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, client in zip(axes, clients, strict=False):
        for i, run in enumerate(runs):
            color = f"C{i}"
            rounds, values = run.curve(client, metric)
            ax.plot(rounds, values, marker="o", markersize=3, color=color, label=run.label)
            test = run.test_value(client, metric)
            if test is not None and rounds:
                ax.plot([rounds[-1]], [test], marker="*", markersize=9, color=color)
        modality = next((r.modality(client) for r in runs if client in r.clients()), "")
        title = client if modality in ("", "-", client) else f"{client} ({modality})"
        task = next((r.task(client) for r in runs if client in r.clients()), "")
        ax.set_title(
            f"{task}: {title}" if task and not client.startswith("mean:") else title, fontsize=9
        )
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(clients) :]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel("round")
    for ax in axes[::cols]:
        ax.set_ylabel(f"val/{metric}")
    legend = {
        label: handle
        for ax in axes
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    handles, labels = list(legend.values()), list(legend)
    handles.append(Line2D([], [], color="grey", marker="*", markersize=9, linestyle=""))
    labels.append("test (after the last round)")
    ncols = min(3, len(handles))
    fig.legend(handles, labels, loc="outside upper center", ncols=ncols, fontsize=8)
    return fig


def _filename(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def write(
    runs: Sequence[RunLog], out: str | os.PathLike[str], metrics: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Write ``results.md``, ``results.csv`` and ``<metric>.png`` per metric into ``out``;
    returns the summary rows and the files written."""
    rows = summarize(runs, metrics)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "results.md", folder / "results.csv"]
    sections = [format_markdown(rows), format_bank_health(runs), format_privacy(runs)]
    files[0].write_text("\n".join(filter(None, sections)))
    with files[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    for metric in dict.fromkeys(r["metric"] for r in rows):
        path = folder / f"{_filename(metric)}.png"
        plot_metric(runs, metric).savefig(path, dpi=110)
        files.append(path)
    return rows, files


def default_out(runs: Sequence[RunLog]) -> Path:
    """``RUN/report`` for one run; ``report`` in the runs' common folder for several."""
    if len(runs) == 1:
        return runs[0].path / "report"
    return Path(os.path.commonpath([r.path.resolve() for r in runs])) / "report"


def main(argv: Sequence[str] | None = None) -> None:
    """``omnifm report RUN_DIR [RUN_DIR ...] [--out DIR] [--metric NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="omnifm report",
        description="Results table (per client and mean: best and last validation round, "
        "test) and PNG curves of metrics across rounds from finished run folders; several "
        "folders are compared side by side.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="output/name/version_N (or output/name)"
    )
    parser.add_argument(
        "--out",
        help="folder for results.md, results.csv and the PNGs (default: RUN_DIR/report "
        "for one run, report/ in the runs' common folder for several)",
    )
    parser.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        help="metrics to report, e.g. acc f1 (default: all but the loss parts task_loss, spalign)",
    )
    args = parser.parse_args(argv)
    try:
        runs = [load_run(path) for path in args.runs]
        out = Path(args.out) if args.out else default_out(runs)
        rows, files = write(runs, out, args.metric)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    print(format_markdown(rows))
    for section in (format_bank_health(runs), format_privacy(runs)):
        if section:
            print(section)
    print(f"wrote {len(files)} files to {out}: {', '.join(p.name for p in files)}")


if __name__ == "__main__":
    main()
