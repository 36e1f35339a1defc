"""`omnifm report` on real 2-round runs: the table files, their values, the plots."""

from __future__ import annotations

import copy
import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from omnifm.__main__ import main
from omnifm.cli import OmniFMCLI
from omnifm.report import load_run

from .tiny_recipes import TINY_CLASSIFIER, write_recipe

METRICS = ["acc", "auroc", "f1", "loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished 2-round runs through the CLI: OmniFM, and FedAvg on a plain backbone."""
    folder = tmp_path_factory.mktemp("report")
    plain = copy.deepcopy(TINY_CLASSIFIER)
    plain["init_args"]["stack"] = None
    OmniFMCLI(["fit", "--config", str(write_recipe(folder, "omnifm"))])
    OmniFMCLI(["fit", "--config", str(write_recipe(folder, "fedavg", plain, "FedAvg"))])
    return {name: folder / "runs" / name / "version_0" for name in ("omnifm", "fedavg")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def expected(run: Path, client: str, metric: str) -> dict[str, float]:
    """Best and last validation values and the test value, straight from history.csv."""
    history = read_csv(run / "history.csv")
    val = [
        (int(r["round"]), float(r[f"val/{metric}"]))
        for r in history
        if r["client"] == client and r["stage"] == "validate"
    ]
    best = (min if metric == "loss" else max)(val, key=lambda p: p[1])
    test = [
        float(r[f"test/{metric}"])
        for r in history
        if r["client"] == client and r["stage"] == "test"
    ]
    return {
        "best": best[1],
        "best_round": best[0],
        "last": val[-1][1],
        "last_round": val[-1][0],
        "test": test[-1],
    }


def test_report_of_one_run(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run = runs["omnifm"]

    main(["report", str(run)])  # the omnifm console script

    out = run / "report"
    table = read_csv(out / "results.csv")
    assert {r["metric"] for r in table} == set(METRICS)  # loss parts left out by default
    assert [r["client"] for r in table if r["metric"] == "acc"] == ["ct", "mri", "mean"]
    assert {r["run"] for r in table} == {"OmniFM (omnifm/version_0)"}
    for row in table:
        want = expected(run, row["client"], row["metric"])
        assert int(row["best_round"]) == want["best_round"]
        assert int(row["last_round"]) == want["last_round"] == 2
        for key in ("best", "last", "test"):
            assert float(row[key]) == pytest.approx(want[key])
    markdown = (out / "results.md").read_text()
    assert "### acc (higher is better" in markdown and "### loss (lower is better" in markdown
    assert "| OmniFM (omnifm/version_0) | mean | - |" in markdown
    assert markdown.strip() in capsys.readouterr().out  # printed too
    for metric in METRICS:
        with Image.open(out / f"{metric}.png") as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100


def test_report_compares_runs_side_by_side(runs: dict[str, Path], tmp_path: Path) -> None:
    main(
        [
            "report",
            str(runs["omnifm"]),
            str(runs["fedavg"].parent),
            "--out",
            str(tmp_path),
            "--metric",
            "val/acc",
            "f1",
        ]
    )

    table = read_csv(tmp_path / "results.csv")
    labels = ["OmniFM (omnifm/version_0)", "FedAvg, plain backbone (fedavg/version_0)"]
    assert list(dict.fromkeys(r["run"] for r in table)) == labels
    assert len(table) == 2 * 2 * 3  # metrics x runs x (2 clients + mean)
    fedavg_mean = next(
        r for r in table if r["run"] == labels[1] and r["client"] == "mean" and r["metric"] == "acc"
    )
    assert float(fedavg_mean["test"]) == pytest.approx(
        expected(runs["fedavg"], "mean", "acc")["test"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acc.png",
        "f1.png",
        "results.csv",
        "results.md",
    ]
    with Image.open(tmp_path / "acc.png") as image:
        image.verify()


def test_run_without_recipe_is_labelled_by_its_folder(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "mine" / "version_3"
    shutil.copytree(runs["fedavg"], run)
    (run / "config.yaml").unlink()  # as a run started from Python without a recipe

    assert load_run(run).label == "mine/version_3"
    assert load_run(run, label="FedAvg").label == "FedAvg"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/run"], "run folder no/such/run not found"),
        (["{empty}"], "has no history.csv"),
        (["{run}", "--metric", "dice"], "metric(s) ['dice'] not in the runs; they have: acc"),
    ],
)
def test_bad_input_gets_one_clear_error(
    runs: dict[str, Path],
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.format(empty=tmp_path, run=runs["omnifm"]) for a in args]

    with pytest.raises(SystemExit):
        main(["report", *args, "--out", str(tmp_path / "out")])

    assert message in capsys.readouterr().err
