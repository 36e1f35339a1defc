"""SegmentationTask: 2D/3D shapes, Dice-CE loss, per-class Dice and IoU, configuration errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omnifm.bank import SpectralBank
from omnifm.blocks import OmniFMStack
from omnifm.tasks import SegmentationTask


def tiny(spatial_dims: int = 2, num_classes: int = 2, stack: bool = True, **kw) -> SegmentationTask:
    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(
            dim, spectral_dim=8, low_pass_size=8, spatial_dims=spatial_dims, num_layers=1, top_k=4
        )

    return SegmentationTask(
        num_classes,
        in_channels=1,
        spatial_dims=spatial_dims,
        features=(4, 8, 16),
        embed_dim=16,
        stack=factory if stack else None,
        **kw,
    )


def batch(spatial: tuple[int, ...], num_classes: int = 2, n: int = 2) -> dict:
    return {
        "image": torch.rand(n, 1, *spatial),
        "mask": torch.randint(0, num_classes, (n, *spatial)),
    }


@pytest.mark.parametrize(("spatial_dims", "spatial"), [(2, (16, 16)), (3, (8, 8, 8))])
def test_forward_2d_and_3d_gives_logits_per_class_and_a_finite_loss(
    spatial_dims: int, spatial: tuple[int, ...]
) -> None:
    model = tiny(spatial_dims, num_classes=3)
    b = batch(spatial, num_classes=3)

    logits, out = model(b)
    loss = model.task_loss(logits, b)
    loss.backward()

    assert logits.shape == (2, 3, *spatial)
    assert out.tokens.shape == (2, (spatial[0] // 4) ** spatial_dims, 16)  # bottleneck grid
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.encoder.stem.conv_0.conv.weight.grad is not None
    assert model.stack.layers.layers[0].linear1.weight.grad is not None  # the stack is used


@pytest.mark.parametrize("num_classes", [2, 3])
def test_a_perfect_mask_scores_dice_and_iou_one(num_classes: int) -> None:
    model = tiny(num_classes=num_classes)
    b = batch((16, 16), num_classes)
    perfect = F.one_hot(b["mask"], num_classes).permute(0, 3, 1, 2).float() * 10

    model.update_metrics(model.val_metrics, perfect, b)
    scores = model.class_scores("val")

    assert scores["val/dice"] == pytest.approx(1.0) and scores["val/iou"] == pytest.approx(1.0)
    for k in range(num_classes):
        assert scores[f"val/dice_{k}"] == pytest.approx(1.0)
        assert scores[f"val/iou_{k}"] == pytest.approx(1.0)
    assert model.class_scores("val") == {}  # reset after reading


def test_binary_scores_match_hand_computed_dice_and_iou() -> None:
    # Prepare: a 4-pixel square predicted as 2 of its pixels plus 2 false positives
    model = tiny()
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, :2, :2] = 1
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 0, :4] = 1
    logits = F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    # Execute
    model.update_metrics(model.test_metrics, logits, {"image": None, "mask": mask})
    scores = model.class_scores("test")
    # Assert: Dice 2*2/(4+4), IoU 2/6 for the foreground
    assert scores["test/dice"] == pytest.approx(0.5) and scores["test/dice_1"] == pytest.approx(0.5)
    assert scores["test/iou"] == pytest.approx(2 / 6)


def test_region_dice_scores_a_union_of_classes_per_image() -> None:
    # Prepare: BraTS-like labels; image 0 has oedema (2) and enhancing tumour (4), image 1 none
    model = tiny(
        spatial_dims=3, num_classes=5, stack=False, regions={"wt": [1, 2, 3, 4], "et": [4]}
    )
    mask = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    mask[0, :2, :2, :2] = 2
    mask[0, 0, 0, 0] = 4
    pred = mask.clone()
    pred[0, 0, 0, 0] = 2  # enhancing tumour read as oedema: still whole tumour
    logits = F.one_hot(pred, 5).permute(0, 4, 1, 2, 3).float()
    # Execute
    model.update_metrics(model.val_metrics, logits, {"image": None, "mask": mask})
    scores = model.class_scores("val")
    # Assert: the whole tumour is exact; the enhancing one missed in image 0 (Dice 0) and
    # absent from target and prediction of image 1 (left out)
    assert scores["val/dice_wt"] == pytest.approx(1.0)
    assert scores["val/dice_et"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="region 'x' must list foreground classes in \\[1, 4\\]"):
        tiny(spatial_dims=3, num_classes=5, stack=False, regions={"x": [0, 1]})


def test_dice_ce_loss_is_lower_for_the_right_mask() -> None:
    model = tiny()
    b = batch((16, 16))
    right = F.one_hot(b["mask"], 2).permute(0, 3, 1, 2).float() * 10
    assert model.task_loss(right, b) < model.task_loss(-right, b)


def test_plain_unet_timm_backbone_and_a_bank() -> None:
    plain = tiny(stack=False)
    assert plain.bridge is None and plain.parameter_groups()["personal"] == set()
    assert plain(batch((16, 16)))[0].shape == (2, 2, 16, 16)
    timm_model = SegmentationTask(2, 1, backbone="test_resnet", embed_dim=16, stack=None)
    assert timm_model(batch((32, 32)))[0].shape == (2, 2, 32, 32)
    # sides that are not a multiple of the backbone's stride 32 (its pyramid rounds up)
    assert timm_model(batch((24, 52)))[0].shape == (2, 2, 24, 52)
    full = tiny()
    bank = SpectralBank(8)
    bank.update("a", "ct", torch.randn(4, 8), round=0)
    _, out = full(batch((16, 16)), bank)
    assert out.hit_ids.shape == (2, 4)
    assert full.parameter_groups()["head"] == {"head.weight", "head.bias"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "background"),
        ({"spatial_dims": 3, "backbone": "test_resnet", "stack": False}, "2D only"),
    ],
)
def test_bad_configurations_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_stack_and_task_must_agree_on_spatial_dims() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        SegmentationTask(2, 1, spatial_dims=3, stack=lambda d: OmniFMStack(d, 8, 8))


def test_mask_values_outside_the_classes_are_rejected() -> None:
    model = tiny()
    b = batch((16, 16))
    b["mask"][0, 0, 0] = 5
    logits, _ = model(b)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        model.task_loss(logits, b)
