"""SuperResolutionTask: shapes at x2/x4/x8, bicubic start, L1 loss, PSNR/SSIM conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from omnifm.blocks import OmniFMStack
from omnifm.tasks import SuperResolutionTask
from omnifm.tasks.super_resolution import rgb_to_y


def tiny(scale: int = 2, channels: int = 3, stack: bool = True, **kw) -> SuperResolutionTask:
    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    return SuperResolutionTask(
        channels,
        scale,
        features=8,
        num_blocks=1,
        token_patch=4,
        embed_dim=16,
        stack=factory if stack else None,
        **kw,
    )


def pair(scale: int, channels: int = 3, lr: int = 16, n: int = 2) -> dict:
    return {
        "image": torch.rand(n, channels, lr, lr),
        "target": torch.rand(n, channels, lr * scale, lr * scale),
    }


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_is_scale_times_the_input_and_the_loss_trains_the_stack(scale: int) -> None:
    model = tiny(scale)
    b = pair(scale)

    preds, out = model(b)
    loss = model.task_loss(preds, b)
    loss.backward()

    assert preds.shape == (2, 3, 16 * scale, 16 * scale)
    assert out.tokens.shape == (2, 16, 16)  # 16x16 LR in 4x4 cells
    assert torch.isfinite(loss) and loss.item() == pytest.approx(
        F.l1_loss(preds, b["target"]).item()
    )
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_a_fresh_model_is_bicubic_upsampling() -> None:
    b = pair(2)
    preds, _ = tiny(2)(b)
    bicubic = F.interpolate(b["image"], scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(preds, bicubic)


def test_psnr_of_identical_images_is_infinite_and_ssim_one() -> None:
    model = tiny(2)
    b = pair(2)
    model.update_metrics(model.test_metrics, b["target"], b)
    scores = model.test_metrics.compute()
    assert math.isinf(scores["test/psnr"]) and scores["test/psnr"] > 0
    assert scores["test/ssim"] == pytest.approx(1.0, abs=1e-4)


def test_psnr_is_measured_per_image_with_data_range_one() -> None:
    # Prepare: errors of 0.1 and 0.01 everywhere: PSNR 20 dB and 40 dB, mean 30 dB
    model = tiny(2)
    target = torch.full((2, 3, 32, 32), 0.5)
    preds = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    # Execute
    model.update_metrics(model.val_metrics, preds, {"image": None, "target": target})
    # Assert
    assert model.val_metrics.compute()["val/psnr"] == pytest.approx(30.0, abs=1e-3)


def test_y_channel_metric_space_and_its_rgb_requirement() -> None:
    white = torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255))
    model = tiny(2, metric_space="y")
    b = pair(2)
    model.update_metrics(model.val_metrics, b["target"], b)
    assert math.isinf(model.val_metrics.compute()["val/psnr"])
    with pytest.raises(ValueError, match="metric_space"):
        tiny(2, channels=1, metric_space="y")


def test_a_grey_target_is_converted_like_the_image_and_a_wrong_scale_is_named() -> None:
    model = tiny(2, stack=False)
    b = pair(2)
    b["target"] = b["target"][:, :1]  # FederatedDataModule turned a grey LR image into RGB
    preds, _ = model(b)
    assert torch.isfinite(model.task_loss(preds, b))
    b["target"] = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="x2"):
        model.task_loss(preds, b)


def test_bad_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="scale must be 2, 4 or 8"):
        tiny(3)


def test_a_timm_backbone_starts_as_bicubic_and_trains_the_stack_on_its_deepest_map() -> None:
    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    model = SuperResolutionTask(3, 2, backbone="test_resnet", embed_dim=16, stack=factory)
    b = pair(2, lr=24)  # a side the backbone's stride (32) does not divide
    preds, out = model(b)
    bicubic = F.interpolate(b["image"], scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.equal(preds, bicubic)  # the zero head: a fresh model is bicubic upsampling
    model.head.weight.data.normal_()  # past the zero start, the stack's way in learns
    model.task_loss(model(b)[0], b).backward()
    assert out.tokens.shape == (2, 1, 16)  # one token per position of the 1x1 deepest map
    assert model.bridge.unembed.weight.grad.abs().sum() > 0
    assert model.parameter_groups()["encoder"] >= {"encoder.backbone.conv1.0.weight"}
