import subprocess
import sys
from pathlib import Path

import pytest

from omnifm.cli import OmniFMCLI

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
    assert "name: ct" in out and "rounds: 8" in out


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
