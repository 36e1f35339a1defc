"""Semantic segmentation (binary or multi-class, 2D or 3D): a U-Net with the OmniFM stack on
its bottleneck."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.segmentation import DiceScore, MeanIoU

from omnifm.blocks import DenseBridge, StackOutput
from omnifm.encoders import TimmFeatureEncoder, UNetDecoder, UNetEncoder
from omnifm.tasks.base import Batch, Encoded, Mode, OmniFMTask

__all__ = ["SegmentationTask"]

Stage = Literal["train", "val", "test"]


class SegmentationTask(OmniFMTask):
    """Segment images or volumes; items carry ``"image"`` ``(C, *spatial)`` and ``"mask"``
    ``(*spatial)`` integer class indices (0 = background).

    Encoder -> bottleneck map -> tokens (one per bottleneck position) -> OmniFM stack ->
    enriched bottleneck -> U-Net decoder with the encoder's skip connections -> 1x1 ``head``.
    How the stack's output feeds the decoder (see ``DenseBridge``): the enriched image tokens
    are reshaped to the bottleneck grid and added to it, so the spectral prefix (retrieved
    global prototypes, fused by ECA) reaches every position through the stack's attention;
    the suffix output (the client's personal PSP token) modulates the bottleneck channels,
    FiLM style. With ``stack: null`` the network is the plain U-Net.

    Loss: MONAI ``DiceCELoss`` (softmax over ``num_classes`` channels; Dice on the foreground
    classes, cross-entropy on all). Metrics per epoch, from torchmetrics on the arg-max mask:
    ``dice`` and ``iou`` = the mean over foreground classes present (in target or prediction)
    of the per-image Dice / IoU, and ``dice_<k>`` / ``iou_<k>`` per class ``k`` (0 =
    background); a class absent from both target and prediction is left out, and a perfect
    mask scores 1. With ``regions``, ``dice_<region>`` is the per-image Dice of a union of
    classes, e.g. BraTS' whole tumour, tumour core and enhancing tumour; an image without the
    region in target and prediction is left out of its mean.

    Args:
        num_classes: classes including background (2 for binary masks); linked from the data.
        in_channels: image channels; linked from the data.
        spatial_dims: 2 for images, 3 for volumes (the stack's ``spatial_dims`` must match).
        backbone: ``None`` for the MONAI U-Net encoder (2D and 3D), or a timm model name
            (2D only) used with ``features_only=True``.
        pretrained: timm pretrained weights for ``backbone`` (needs network or a filled cache).
        features: channels per level of the MONAI encoder (bottleneck at
            ``1 / 2**(len(features) - 1)`` of the input size).
        norm: ``instance`` or ``batch`` normalisation in the MONAI encoder and the decoder.
        dropout: dropout in the convolution blocks.
        regions: named unions of foreground classes to score as one, e.g. ``{wt: [1, 2, 3, 4],
            tc: [1, 3, 4], et: [4]}`` for BraTS' labels.
        **kwargs: ``OmniFMTask``'s arguments (``embed_dim``, ``stack``, ``spalign_weight``,
            ``optimizer``, ``recalibrate_bn``).
    """

    monitor, mode = "dice", "max"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        spatial_dims: Literal[2, 3] = 2,
        backbone: str | None = None,
        pretrained: bool = False,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: Literal["instance", "batch"] = "instance",
        dropout: float = 0.0,
        regions: dict[str, list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(
                f"num_classes counts the background too and must be >= 2, got {num_classes}"
            )
        for name, classes in (regions or {}).items():
            if name.isdigit():  # dice_<k> is class k's
                raise ValueError(f"region name {name!r} is a class index; name it, e.g. 'wt'")
            if not classes or not all(0 < k < num_classes for k in classes):
                raise ValueError(
                    f"region {name!r} must list foreground classes in [1, {num_classes - 1}], "
                    f"got {classes}"
                )
        self.regions = {name: torch.tensor(classes) for name, classes in (regions or {}).items()}
        self.check_spatial_dims(spatial_dims)
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        if backbone is None:
            self.encoder = UNetEncoder(spatial_dims, in_channels, features, norm, dropout)
        elif spatial_dims == 2:
            self.encoder = TimmFeatureEncoder(backbone, in_channels, pretrained)
        else:
            raise ValueError(f"a timm backbone ({backbone!r}) is 2D only; use backbone: null")
        channels = self.encoder.channels
        self.bridge = (
            DenseBridge(channels[-1], self.embed_dim, 1, spatial_dims)
            if self.stack is not None
            else None
        )
        self.decoder = UNetDecoder(spatial_dims, channels, norm, dropout)
        self.head = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(channels[0], num_classes, 1)
        self.loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
        per_class = MetricCollection(
            {
                "dice": DiceScore(num_classes, average="none", input_format="index"),
                "iou": MeanIoU(num_classes, per_class=True, input_format="index"),
                **{
                    f"dice_{name}": DiceScore(2, include_background=False, input_format="index")
                    for name in self.regions
                },
            },
            compute_groups=False,
        )
        self.train_class_metrics = per_class.clone()
        self.val_class_metrics = per_class.clone()
        self.test_class_metrics = per_class.clone()

    # hooks --------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Encoded:
        """The bottleneck as tokens ``(B, L, D)``; the encoder maps for the decoder."""
        maps = self.encoder(batch["image"])
        bottleneck = maps[-1]
        if self.bridge is None:  # plain U-Net: the stack is skipped, tokens are not used
            return Encoded(bottleneck.flatten(2).transpose(1, 2), maps)
        return Encoded(self.bridge.tokens(bottleneck), maps)

    def decode(self, out: StackOutput, batch: Batch, features: Any = None) -> Tensor:
        """Logits ``(B, num_classes, *spatial)`` from the encoder maps ``features``."""
        maps = list(features)
        if self.bridge is not None:
            maps = [*maps[:-1], self.bridge.fuse(maps[-1], out.tokens, out.suffix)]
        return self.head(self.decoder(maps, batch["image"].shape[2:]))

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        return self.loss(preds, self._mask(batch, preds).unsqueeze(1))

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        stage = metrics.prefix.rstrip("/")  # the base class hands over its stage's collection
        per_class = getattr(self, f"{stage}_class_metrics")
        pred, mask = preds.argmax(dim=1), self._mask(batch, preds)
        for name, metric in per_class.items(keep_base=True):
            if name in ("dice", "iou"):
                metric.update(pred, mask)
            else:  # a region: the union of its classes against everything else
                classes = self.regions[name.removeprefix("dice_")].to(mask.device)
                metric.update(torch.isin(pred, classes).long(), torch.isin(mask, classes).long())

    def metric_modes(self) -> dict[str, Mode]:
        """The base class's, plus the per-class collection (``dice``, ``iou``; their
        ``dice_<k>`` per class read as ``dice``)."""
        modes = super().metric_modes()
        for name, metric in self.val_class_metrics.items(keep_base=True):
            modes[name] = "max" if metric.higher_is_better else "min"
        return modes

    # per-class metrics, logged once per epoch -----------------------------------------------
    def _mask(self, batch: Batch, preds: Tensor) -> Tensor:
        mask = batch["mask"].long()
        if mask.ndim == preds.ndim:  # (B, 1, *spatial)
            mask = mask.squeeze(1)
        if mask.shape != preds.shape[:1] + preds.shape[2:]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match the image's "
                f"{tuple(preds.shape[:1] + preds.shape[2:])}"
            )
        if int(mask.min()) < 0 or int(mask.max()) >= self.num_classes:
            raise ValueError(
                f"mask values must be class indices in [0, {self.num_classes - 1}], got "
                f"[{int(mask.min())}, {int(mask.max())}]; check num_classes or the mask threshold"
            )
        return mask

    def class_scores(self, stage: Stage) -> dict[str, Tensor]:
        """``{stage}/dice``, ``{stage}/dice_<k>``, ``{stage}/iou``, ... of the masks seen in
        ``stage`` since the last call (then reset); empty when none were seen."""
        collection = getattr(self, f"{stage}_class_metrics")
        if collection["dice"].update_count == 0:
            return {}
        scores: dict[str, Tensor] = {}
        for name, values in collection.compute().items():
            if name.removeprefix("dice_") in self.regions:
                if torch.isfinite(values):  # NaN: the region was in no image
                    scores[f"{stage}/{name}"] = values
                continue
            # absent classes come back as NaN (Dice) or -1 (IoU): leave them out
            present = torch.isfinite(values) & (values >= 0)
            fg = values[1:][present[1:]]
            scores[f"{stage}/{name}"] = fg.mean() if fg.numel() else values.new_tensor(1.0)
            for k in range(self.num_classes):
                if present[k]:
                    scores[f"{stage}/{name}_{k}"] = values[k]
        collection.reset()
        return scores

    def _log_class_scores(self, stage: Stage) -> None:
        scores = self.class_scores(stage)
        if scores:
            self.log_dict(scores)

    def on_train_epoch_end(self) -> None:
        self._log_class_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_class_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_class_scores("test")
