"""A new task is a subclass of OmniFMTask; the CLI trains it federated by its import path."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import torch

from omnifm.cli import OmniFMCLI

from . import custom_task
from .tiny_recipes import TINY_STACK, write_recipe


def test_custom_task_is_short() -> None:
    assert len(inspect.getsource(custom_task).splitlines()) < 50


def test_custom_task_trains_federated_through_the_cli(tmp_path: Path) -> None:
    model = {
        "class_path": "tests.custom_task.BrightnessRegression",
        "init_args": {"backbone": "test_resnet", "embed_dim": 16, "stack": TINY_STACK},
    }
    recipe = write_recipe(tmp_path, "brightness", model)

    cli = OmniFMCLI(["fit", "--config", str(recipe)])

    assert type(cli.model) is custom_task.BrightnessRegression
    assert cli.model.hparams["in_channels"] == 1  # linked from the data
    rows = cli.results
    assert [r["client"] for r in rows] == ["ct", "mri", "mean"]
    assert all(torch.isfinite(torch.tensor(r["test/mae"])) for r in rows)
    run = tmp_path / "runs" / "brightness" / "version_0"
    with (run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert {(r["round"], r["stage"]) for r in history} == {
        ("1", "bank"),
        ("1", "validate"),
        ("2", "bank"),
        ("2", "validate"),
        ("2", "test"),
    }
    assert "class_path: tests.custom_task.BrightnessRegression" in (run / "config.yaml").read_text()
    # the personal state of OmniFM (head and PSP suffix) was kept per client
    groups = cli.model.parameter_groups()
    assert groups["personal"] == {"stack.psp.suffix"} and groups["head"] == {
        "head.weight",
        "head.bias",
    }
    assert (run / "metrics.yaml").read_text().startswith("monitor: mae\nmode: min\n")
