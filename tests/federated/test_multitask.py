"""Many tasks in one federation: the backbone and stack are shared by every client, the rest of
a task by that task's clients, personal parts by nobody; resume; the recipe through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnifm.cli import OmniFMCLI
from omnifm.datamodules import ClientSource, FederatedDataModule, MultiTaskDataModule
from omnifm.federated import FedAdam, FedAvg, FedPer, FitRes, Krum, OmniFM, Strategy
from omnifm.report import format_markdown, load_run, summarize
from omnifm.tasks import ClassificationTask, MultiTask, SegmentationTask, SuperResolutionTask

from ..tiny_recipes import tiny_multitask, write_recipe
from .helpers import capture_results, tiny_multitask_data, tiny_multitask_federation
from .test_engine import FaultyPhantom

GRADING, ORGANS = ("ct", "mri"), ("ultrasound", "pathology")


def _mean(results: list[FitRes], key: str) -> torch.Tensor:
    weights = torch.tensor([float(r.num_examples) for r in results])
    stacked = torch.stack([r.weights[key].double() for r in results])
    return (stacked * (weights / weights.sum()).view(-1, *[1] * (stacked.ndim - 1))).sum(0)


def test_shared_state_is_averaged_over_every_client_and_task_state_within_its_task(
    tmp_path: Path,
) -> None:
    # Prepare: FedAvg keeps nothing personal, so heads are aggregated within their task
    run = tiny_multitask_federation(tmp_path, FedAvg(), rounds=1, eval_every=10)
    sent = capture_results(run)
    # Execute
    run.fit()
    # Assert: the backbone is the mean of all four hospitals, a head the mean of its task's two
    by_client = {r.client: r for r in sent}
    shared = run.server.shared
    conv = "encoder.backbone.conv1.0.weight"
    assert torch.allclose(shared[conv].double(), _mean(sent, conv), atol=1e-6)
    for task, clients in (("grading", GRADING), ("organs", ORGANS)):
        mine = [by_client[c] for c in clients]
        assert torch.allclose(
            shared[f"{task}/head.weight"].double(), _mean(mine, "head.weight"), atol=1e-6
        )
    assert "head.weight" not in shared  # no head is shared across tasks
    # what each client receives next round: one backbone for all, one head per task
    ins = {c: run.server.fit_ins(2, c) for c in GRADING + ORGANS}
    for key in run.server.layout.across:
        assert all(torch.equal(ins[c].weights[key], ins["ct"].weights[key]) for c in ins), key
    for a, b in (GRADING, ORGANS):
        assert torch.equal(ins[a].weights["head.weight"], ins[b].weights["head.weight"])
    assert ins["ct"].weights["head.weight"].shape != ins["ultrasound"].weights["head.weight"].shape
    assert "decoder.ups.0.convs.conv_0.conv.weight" not in ins["ct"].weights
    assert "decoder.ups.0.convs.conv_0.conv.weight" in ins["ultrasound"].weights


def test_personal_parts_never_leave_a_client(tmp_path: Path) -> None:
    run = tiny_multitask_federation(tmp_path, OmniFM(), rounds=2, eval_every=10)
    sent = capture_results(run)
    run.fit()
    personal = {"head.weight", "head.bias", "stack.psp.suffix"}
    assert len(sent) == 8 and all(personal.isdisjoint(r.weights) for r in sent)
    assert not [k for k in run.server.shared if k.split("/")[-1] in personal]
    suffixes = [run.personal_state(c)["stack.psp.suffix"] for c in GRADING + ORGANS]
    assert not any(torch.equal(suffixes[0], s) for s in suffixes[1:])


def test_a_shared_part_that_differs_between_tasks_fails_before_any_round() -> None:
    common = {"backbone": "test_resnet", "embed_dim": 16, "stack": None}
    grading = ClassificationTask(num_classes=2, in_channels=1, **common)
    with pytest.raises(
        ValueError,
        match=r"'grading' and 'organs' name shared part 'encoder.backbone' with different "
        r"shapes: encoder.backbone.conv1.0.weight is \(.*, 1, .*\) in 'grading' and "
        r"\(.*, 3, .*\) in 'organs'",
    ):
        MultiTask({"grading": grading, "organs": SegmentationTask(2, 3, **common)})
    with pytest.raises(ValueError, match="shared part 'encoder.backbone' is not in task 'sr'"):
        MultiTask({"grading": grading, "sr": SuperResolutionTask(1, embed_dim=16, stack=None)})


@pytest.mark.parametrize("strategy", [OmniFM, FedAdam], ids=["OmniFM", "FedAdam"])
def test_resumed_two_task_run_ends_with_the_state_of_an_uninterrupted_run(
    tmp_path: Path, strategy: type[Strategy]
) -> None:
    # Prepare: half of the clients each round, so a task can miss a round (its state waits)
    kwargs = {"participation": 0.5, "eval_every": 10}
    full = tiny_multitask_federation(tmp_path / "a", strategy(), rounds=3, **kwargs)
    full.fit()
    tiny_multitask_federation(tmp_path / "b", strategy(), rounds=2, **kwargs).fit()
    # Execute
    resumed = tiny_multitask_federation(tmp_path / "b", strategy(), rounds=3, **kwargs)
    resumed.fit(ckpt_path="last")
    # Assert
    assert list(full.server.shared) == list(resumed.server.shared)
    for key, value in full.server.shared.items():
        assert torch.equal(value, resumed.server.shared[key]), key
    for name in full.clients:
        mine, other = full.personal_state(name) or {}, resumed.personal_state(name) or {}
        assert mine.keys() == other.keys()
        assert all(torch.equal(v, other[k]) for k, v in mine.items()), name
    scopes = full.server.state_dict()["strategy"]["scopes"]
    assert set(scopes) == {"*", "grading", "organs"}
    for scope, state in scopes.items():  # FedAdam's moments, per scope
        other = resumed.server.state_dict()["strategy"]["scopes"][scope]
        for key, value in state.items():
            if isinstance(value, dict):
                assert all(torch.equal(v, other[key][k]) for k, v in value.items()), key
            else:
                assert value == other[key], (scope, key)


def test_a_two_task_recipe_runs_through_the_cli_and_reports_by_task(tmp_path: Path) -> None:
    model, data = tiny_multitask()
    recipe = write_recipe(tmp_path, "tasks", model=model, data=data)
    rows = OmniFMCLI(["fit", "--config", str(recipe)]).results
    assert [(r["task"], r["client"]) for r in rows] == [
        ("grading", "ct"),
        ("grading", "mri"),
        ("grading", "mean:grading"),
        ("organs", "ultrasound"),
        ("organs", "pathology"),
        ("organs", "mean:organs"),
    ]
    assert "test/acc" in rows[0] and "test/dice" in rows[3] and "test/dice" not in rows[0]
    run = load_run(tmp_path / "runs" / "tasks")
    report = format_markdown(summarize([run]))
    assert (
        report.index("## task grading") < report.index("### acc") < report.index("## task organs")
    )
    assert report.index("## task organs") < report.index("### dice")


def test_a_recipe_whose_tasks_disagree_on_the_backbone_stops_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = tiny_multitask()
    data["init_args"]["tasks"]["organs"]["init_args"]["in_channels"] = 3
    recipe = write_recipe(tmp_path, "tasks", model=model, data=data)
    with pytest.raises(SystemExit) as stop:
        OmniFMCLI(["fit", "--config", str(recipe)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "shared part 'encoder.backbone' with different shapes" in err
    assert not (tmp_path / "runs").exists()  # before any round


def test_a_crashing_hospital_of_one_task_is_left_out_and_the_others_aggregate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a third grading hospital whose image export breaks mid-epoch
    data = tiny_multitask_data()
    sizes = {"num_train": 16, "num_val": 8, "num_test": 8, "size": 16}
    crash = ClientSource("crash", FaultyPhantom("crash", modality="xray", **sizes))
    grading = [*data.tasks["grading"].sources, crash]
    tasks = {**data.tasks, "grading": FederatedDataModule(grading, in_channels=1, batch_size=8)}
    run = tiny_multitask_federation(
        tmp_path, OmniFM(), rounds=1, eval_every=10, data=MultiTaskDataModule(tasks)
    )
    sent = capture_results(run)
    # Execute
    rows = run.fit()
    # Assert
    assert sorted(r.client for r in sent) == sorted(GRADING + ORGANS)
    assert "PACS export" in caplog.text and run.personal_state("crash") is None
    grading_rows = [r["client"] for r in rows if r["task"] == "grading"]
    assert grading_rows == [*GRADING, "crash", "mean:grading"]


def test_an_aggregator_that_needs_more_clients_than_a_task_has_stops_before_round_one(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"needs 3 clients a round, but scope 'grading' has 2"):
        tiny_multitask_federation(tmp_path, FedPer(), rounds=1, aggregator=Krum())
    assert not (tmp_path / "test").exists()
