"""The segmentation and super-resolution recipes: 2-round federated runs on ../shared/data
through the CLI at small sizes, and the phantom variants."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from omnifm.cli import OmniFMCLI
from omnifm.tasks import SegmentationTask, SuperResolutionTask

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--model.init_args.embed_dim=16",
    "--model.init_args.stack.init_args.spectral_dim=8",
    "--model.init_args.stack.init_args.low_pass_size=8",
    "--trainer.max_steps=2",
    "--trainer.accelerator=cpu",
    "--federation.rounds=2",
]


def small_data(config: str, root: Path, folder: Path, **client_args) -> Path:
    """The data config `config` with its root set to `root`, batches of 4 and `client_args`
    given to every client's source."""
    data = yaml.safe_load((REPO / config).read_text())
    data["init_args"].update(root=str(root), batch_size=4)
    for client in data["init_args"]["clients"]:
        client["data"]["init_args"].update(client_args)
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_round_polyp_segmentation_run(polyp_dir: Path, tmp_path: Path) -> None:
    data = small_data("datamodules/polyp.yaml", polyp_dir.parent, tmp_path, size=32, max_items=24)
    cli = OmniFMCLI(
        [
            "fit",
            "--config",
            str(REPO / "recipes" / "segmentation.yaml"),
            f"--data={data}",
            "--model.init_args.features=[4, 8, 16]",
            *TINY,
            f"--federation.output={tmp_path}",
        ]
    )
    rows = cli.results
    assert [r["client"] for r in rows] == ["kvasir-seg", "cvc-clinicdb", "mean"]
    assert {r["modality"] for r in rows[:-1]} == {"endoscopy"}
    assert all(0 <= r["test/dice"] <= 1 and 0 <= r["test/iou_1"] <= 1 for r in rows)
    run = tmp_path / "segmentation" / "version_0"
    assert (run / "checkpoints" / "last.pt").is_file()
    assert "test/dice" in (run / "results.csv").read_text()


def test_3d_glioma_segmentation_of_two_mri_sequences(brats_dir: Path, tmp_path: Path) -> None:
    data = small_data(
        "datamodules/brats_flair_t1c.yaml", brats_dir.parent, tmp_path, size=[32, 32, 24]
    )
    cli = OmniFMCLI(
        [
            "fit",
            "--config",
            str(REPO / "recipes" / "segmentation_3d.yaml"),
            f"--data={data}",
            "--model.init_args.features=[4, 8, 16]",
            *TINY,
            "--federation.rounds=1",
            f"--federation.output={tmp_path}",
        ]
    )
    rows = cli.results
    assert [r["client"] for r in rows] == ["flair-hospital", "t1c-hospital", "mean"]
    assert [r["modality"] for r in rows[:-1]] == ["mri-flair", "mri-t1c"]
    assert all(0 <= r[f"test/dice_{k}"] <= 1 for r in rows for k in ("wt", "tc", "et"))


def test_two_round_breakhis_super_resolution_run(breakhis_dir: Path, tmp_path: Path) -> None:
    data = small_data(
        "datamodules/breakhis.yaml",
        breakhis_dir.parent,
        tmp_path,
        patch_size=32,
        patches_per_image=2,
        eval_patches_per_image=2,
    )
    cli = OmniFMCLI(
        [
            "fit",
            "--config",
            str(REPO / "recipes" / "super_resolution.yaml"),
            f"--data={data}",
            "--model.init_args.features=8",
            "--model.init_args.num_blocks=1",
            *TINY,
            f"--federation.output={tmp_path}",
        ]
    )
    rows = cli.results
    assert [r["client"] for r in rows] == ["benign", "malignant", "mean"]
    assert all(20 < r["test/psnr"] < 60 and 0 < r["test/ssim"] <= 1 for r in rows)
    assert not any(math.isnan(r["test/loss"]) for r in rows)


@pytest.mark.parametrize(
    ("recipe", "task", "clients"),
    [
        ("segmentation_phantom.yaml", SegmentationTask, 4),
        ("super_resolution_phantom.yaml", SuperResolutionTask, 4),
    ],
)
def test_phantom_recipes_build_their_model_and_clients(
    recipe: str, task: type, clients: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    cli = OmniFMCLI(["--config", f"recipes/{recipe}"], run=False)
    assert isinstance(cli.model, task)
    assert len(cli.datamodule.client_names()) == clients
