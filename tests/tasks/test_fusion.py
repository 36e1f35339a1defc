from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from omnifm.cli import OmniFMCLI
from omnifm.functional.fusion import (
    fusion_loss,
    gradient_magnitude,
    image_entropy,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from omnifm.metrics import FusedEntropy, FusedMutualInformation, FusedSSIM, FusedVIF
from omnifm.tasks import FusionTask

REPO = Path(__file__).resolve().parents[2]


def fusion_batch(n: int = 2, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 1, size, size, generator=g)
    return {"image": image, "partner": torch.rand(n, 3, size, size, generator=g)}


def test_ycbcr_round_trip_and_pil_convention() -> None:
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb)
    # the same YCbCr as PIL's JPEG convention, to 8-bit rounding
    pixels = (rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = np.asarray(Image.fromarray(pixels).convert("YCbCr"), dtype=np.float64) / 255
    ours = rgb_to_ycbcr(torch.from_numpy(pixels).permute(2, 0, 1).double() / 255)
    assert np.abs(ours.permute(1, 2, 0).numpy() - pil).max() <= 1.5 / 255
    # grey has neutral chroma
    grey = torch.full((1, 3, 4, 4), 0.3)
    torch.testing.assert_close(rgb_to_ycbcr(grey)[:, 1:], torch.full((1, 2, 4, 4), 0.5))


def test_ycbcr_agrees_with_kornia_where_installed() -> None:
    kornia = pytest.importorskip("kornia", reason="kornia not installed")
    rgb = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(rgb_to_ycbcr(rgb), kornia.color.rgb_to_ycbcr(rgb), atol=2e-3, rtol=0)


@pytest.mark.parametrize("backbone", [None, "test_resnet"])
@pytest.mark.parametrize("with_stack", [True, False])
def test_fused_output_range_and_shape(backbone: str | None, with_stack: bool) -> None:
    kwargs = {} if with_stack else {"stack": None}
    model = FusionTask(backbone=backbone, features=(8, 16, 32), embed_dim=16, **kwargs)
    batch = fusion_batch()

    fused, _ = model(batch)
    loss = model.task_loss(fused, batch)
    loss.backward()
    rgb = model.fuse(batch)

    assert fused.shape == (2, 1, 64, 64) and rgb.shape == (2, 3, 64, 64)
    assert fused.min() >= 0 and fused.max() <= 1 and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.isfinite(loss)
    # the colour comes from the partner: its chroma survives in the fused image
    chroma = rgb_to_ycbcr(rgb)[:, 1:]
    assert (chroma - rgb_to_ycbcr(batch["partner"])[:, 1:]).abs().mean() < 0.05


def test_metrics_and_loss_on_identical_images() -> None:
    image = torch.rand(3, 1, 48, 48)

    metrics = {
        "vif": FusedVIF(),
        "ssim": FusedSSIM("first"),
        "mi": FusedMutualInformation(),
        "entropy": FusedEntropy(),
    }
    for metric in metrics.values():
        metric.update(image, image, image)
    values = {k: float(m.compute()) for k, m in metrics.items()}
    loss, terms = fusion_loss(image, image, image)

    assert values["vif"] == pytest.approx(1.0, abs=1e-4)
    assert values["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert values["mi"] == pytest.approx(2 * values["entropy"], rel=1e-4)  # MI(F,A)+MI(F,B)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    assert set(terms) == {"ssim", "intensity", "gradient"}


def test_entropy_and_gradient_on_known_images() -> None:
    halves = torch.zeros(1, 1, 8, 8)
    halves[..., 4:] = 1.0

    assert float(image_entropy(halves)) == pytest.approx(1.0)  # two equal grey levels: 1 bit
    assert float(image_entropy(torch.zeros(1, 1, 8, 8))) == pytest.approx(0.0)
    grad = gradient_magnitude(halves)
    assert grad[0, 0, :, :2].eq(0).all() and grad[0, 0, :, 3:5].eq(4).all()  # Sobel at the edge


def test_mismatched_inputs_are_rejected() -> None:
    model = FusionTask(features=(8, 16), embed_dim=16, stack=None)
    batch = fusion_batch()
    batch["partner"] = batch["partner"][:, :1]
    with pytest.raises(ValueError, match="partner"):
        model(batch)


SMALL = [
    "--model.init_args.features=[8, 16, 32, 32]",
    "--model.init_args.embed_dim=16",
    "--model.init_args.stack.init_args.spectral_dim=8",
    "--model.init_args.stack.init_args.low_pass_size=8",
    "--model.init_args.recalibrate_bn=false",
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.accelerator=cpu",
    "--federation.rounds=2",
    "--federation.bank.warmup=false",
]


def small_data(config: str, tmp_path: Path, **init_args) -> Path:
    """The recipe's data config with smaller sources, written to ``tmp_path``."""
    data = yaml.safe_load((REPO / "datamodules" / config).read_text())
    for client in data["init_args"]["clients"]:
        client["data"]["init_args"].update(init_args)
    path = tmp_path / config
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_round_harvard_fusion_run_through_the_cli(
    harvard_fusion_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the data root ../shared/data is relative to the repo
    data = small_data("harvard_fusion.yaml", tmp_path, size=48)
    cli = OmniFMCLI(
        ["fit", "--config", "recipes/fusion.yaml", f"--data={data}", *SMALL,
         f"--federation.output={tmp_path}"]
    )  # fmt: skip
    rows = cli.results

    assert [r["client"] for r in rows] == ["ct-mri", "pet-mri", "spect-mri", "mean"]
    assert [r["modality"] for r in rows[:-1]] == ["ct", "pet", "spect"]
    for key in ("test/vif", "test/ssim_mri", "test/ssim_partner", "test/mi", "test/entropy"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert 0 < rows[-1]["test/vif"] < 1.5 and 0 < rows[-1]["test/entropy"] <= 8
    assert "test/vif" in (tmp_path / "fusion" / "version_0" / "results.csv").read_text()


def test_phantom_fusion_recipe_runs_without_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    data = small_data("phantom_fusion.yaml", tmp_path, size=48, num_train=16, num_val=4)
    cli = OmniFMCLI(
        ["fit", "--config", "recipes/fusion_phantom.yaml", f"--data={data}", *SMALL,
         "--federation.rounds=1", f"--federation.output={tmp_path}"]
    )  # fmt: skip
    assert [r["modality"] for r in cli.results[:-1]] == ["ct", "pet", "spect"]
    assert 0 < cli.results[-1]["test/vif"] < 1.5
