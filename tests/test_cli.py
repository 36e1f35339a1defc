import subprocess
import sys
from pathlib import Path

import pytest

from omnifm.cli import OmniFMCLI
from omnifm.report import load_run

from .tiny_recipes import write_recipe

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.embed_dim=16",
    "--model.init_args.stack.init_args.spectral_dim=8",
    "--model.init_args.stack.init_args.low_pass_size=8",
    "--trainer.max_steps=2",
    "--trainer.accelerator=cpu",
    "--federation.rounds=2",
]


def test_two_round_medmnist_run_through_the_cli(medmnist_dir: Path, tmp_path: Path) -> None:
    cli = OmniFMCLI(
        [
            "fit",
            "--config",
            str(REPO / "recipes" / "classification.yaml"),
            *SMALL,
            f"--federation.output={tmp_path}",
            "--federation.participation=0.5",
        ]
    )
    rows = cli.results
    assert len(rows) == 10 and rows[-1]["client"] == "mean"
    assert {r["modality"] for r in rows[:-1]} == {"ultrasound", "fundus", "x-ray"}
    run = tmp_path / "classification" / "version_0"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    assert "test/acc" in (run / "results.csv").read_text()
    # the same recipe resumes and evaluates from its checkpoint
    test = OmniFMCLI(
        [
            "test",
            "--config",
            str(REPO / "recipes" / "classification.yaml"),
            *SMALL,
            f"--federation.output={tmp_path}",
            "--ckpt_path=last",
        ]
    )
    assert test.results[-1]["test/acc"] == pytest.approx(rows[-1]["test/acc"])


def test_3d_classification_of_real_volumes_through_the_cli(
    shared_data: Path, tmp_path: Path
) -> None:
    if not (shared_data / "medmnist3d" / "adrenalmnist3d.npz").is_file():
        pytest.skip("../shared/data/medmnist3d/adrenalmnist3d.npz not found")
    cli = OmniFMCLI(
        [
            "fit",
            "--config",
            str(REPO / "recipes" / "classification_3d.yaml"),
            "--model.init_args.width=0.125",
            "--trainer.max_steps=2",
            "--trainer.accelerator=cpu",
            "--federation.rounds=1",
            f"--federation.output={tmp_path}",
        ]
    )
    rows = cli.results
    assert [r["client"] for r in rows] == [f"adrenalmnist3d-{i}" for i in range(3)] + ["mean"]
    assert all(0.0 <= r["test/acc"] <= 1.0 for r in rows) and rows[0]["modality"] == "ct"
    assert cli.model.encoder.backbone[0].weight.ndim == 5  # a 3D convolution


def test_quickstart_recipe_parses_and_prints_config() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "omnifm.cli",
            "fit",
            "--config",
            "recipes/quickstart.yaml",
            "--print_config",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "class_path: omnifm.tasks.ClassificationTask" in out
    assert "class_path: omnifm.federated.OmniFM" in out
    assert "name: ct" in out and "rounds: 30" in out


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("--federation.participation=1.5", "federation.participation"),
        ("--federation.strategy=FedNope", "federation.strategy"),
        ("--federation.rounds=0", "federation.rounds"),
        ("--model.init_args.stack.init_args.top_k=many", "top_k"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(override: str, key: str, capsys) -> None:
    with pytest.raises(SystemExit):
        OmniFMCLI(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), override])
    assert key in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "wanted"),
    [
        (  # an unknown strategy lists the valid names
            "--federation.strategy=FedFoo",
            "federation.strategy: unknown strategy 'FedFoo'. Valid names: Ditto, FedAdagrad, "
            "FedAdam, FedAvg, FedAvgM, FedBN, FedDyn, FedPer, FedProx, FedRep, FedYogi, GPFL, "
            "MOON, OmniFM, SCAFFOLD; or the import path of a Strategy subclass",
        ),
        (  # a width the heads cannot split, said in the recipe's names, with a fix
            "--model.init_args.embed_dim=130",
            "model.init_args.embed_dim=130 must be divisible by "
            "model.init_args.stack.init_args.num_heads=4 (the attention heads split the features "
            "evenly): set model.init_args.embed_dim to a multiple of 4 (e.g. 132)",
        ),
        (  # values that would switch the method off while it is still called OmniFM
            "--model.init_args.stack.init_args.top_k=0",
            "model.init_args.stack.init_args.top_k=0 retrieves no prototypes",
        ),
        (
            "--federation.bank.prototypes_per_client=0",
            "federation.bank.prototypes_per_client=0 leaves the spectral bank empty",
        ),
        (
            "--model.init_args.spalign_weight=0",
            "spalign_weight=0.0 (model.init_args.spalign_weight) switches SPAlign off",
        ),
    ],
)
def test_bad_recipes_stop_with_one_short_error(
    override: str, wanted: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path, "tiny")
    with pytest.raises(SystemExit) as stop:
        OmniFMCLI(["fit", "--config", str(recipe), override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2
    assert lines[-2].startswith("error: ") and wanted in lines[-2]
    assert lines[-1].endswith(" fit --help` lists every option)")  # prog: omnifm
    assert "usage:" not in err and "Traceback" not in err  # no parser dump
    assert not (tmp_path / "runs").exists()  # nothing was written


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny recipe and the folder of its finished 1-round run."""
    folder = tmp_path_factory.mktemp("finished")
    recipe = write_recipe(folder, "tiny", rounds=1)
    recipe.write_text(recipe.read_text().replace("max_steps: 2", "max_steps: 1"))
    OmniFMCLI(["fit", "--config", str(recipe)])
    return recipe, folder / "runs" / "tiny" / "version_0"


RECORD = ("history.csv", "results.csv", "config.yaml", "checkpoints/last.pt")


def test_validate_and_test_after_fit_keep_what_the_run_wrote(
    finished_run: tuple[Path, Path],
) -> None:
    # Prepare
    recipe, run = finished_run
    written = {name: (run / name).read_bytes() for name in RECORD}
    fit_test = load_run(run).values("test", "mean", "acc")
    # Execute
    for stage in ("validate", "test"):
        OmniFMCLI([stage, "--config", str(recipe), "--ckpt_path=last"])
    # Assert: the run's files are byte for byte as the fit left them, and report reads them
    assert {name: (run / name).read_bytes() for name in RECORD} == written
    assert load_run(run).values("test", "mean", "acc") == fit_test != []
    validate = (run / "history_validate.csv").read_text().splitlines()
    test = (run / "history_test.csv").read_text().splitlines()
    assert validate[0].startswith("round,stage,at,client,modality,val/")
    assert len(validate) == len(test) == 1 + 3  # ct, mri and their mean
    assert all(line.startswith("1,test,") for line in test[1:])


def test_a_checkpoint_of_another_width_is_refused_naming_the_setting(
    finished_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = finished_run
    written = {name: (run / name).read_bytes() for name in RECORD}
    args = ["--config", str(recipe), "--ckpt_path=last", "--model.init_args.embed_dim=32"]
    for stage in ("fit", "test"):
        with pytest.raises(SystemExit):
            OmniFMCLI([stage, *args])
        err = capsys.readouterr().err.splitlines()
        assert err[-2].startswith(
            f"error: --ckpt_path last does not fit this recipe; these settings differ from the "
            f"run's {run / 'config.yaml'}: model.init_args.embed_dim: 16 in the run, 32 now."
        )
        assert "tensors of other shapes (checkpoint vs model)" in err[-2]
        assert f"omnifm {stage} --config {run / 'config.yaml'} --ckpt_path last" in err[-2]
    assert {name: (run / name).read_bytes() for name in RECORD} == written
    assert not (run.parent / "version_1").exists()
