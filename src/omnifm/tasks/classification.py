"""Image classification (multi-class, binary, multi-label) on any timm backbone, and volume
classification on MONAI's 3D ResNets."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
)

from omnifm.encoders import TimmTokenEncoder, VolumeTokenEncoder
from omnifm.tasks.base import Batch, OmniFMTask

__all__ = ["ClassificationTask"]


class ClassificationTask(OmniFMTask):
    """Classify images (or volumes); the OmniFM stack's suffix token feeds a linear head.

    Binary tasks use two logits and cross-entropy, as MedMNIST's reference training does;
    multi-label tasks use one logit per label and binary cross-entropy. Metrics: accuracy
    (micro), macro-F1 and macro AUROC.

    Args:
        num_classes: classes (labels, for multi-label); linked from the data in the CLI.
        in_channels: image channels; linked from the data in the CLI.
        task_type: ``multi-class``, ``binary`` or ``multi-label``; linked from the data.
        backbone: timm model name; for volumes one of MONAI's 3D ResNets (``resnet10`` to
            ``resnet101``, ``VolumeTokenEncoder``).
        pretrained: timm pretrained weights, or MONAI's MedicalNet weights for volumes (needs
            network or a filled cache).
        weights: local backbone weights file (see ``TimmTokenEncoder``, ``VolumeTokenEncoder``).
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)`` (the
            stack's ``spatial_dims`` must match).
        width: volumes only: the 3D ResNet's channels times this (MONAI's ``widen_factor``).
        **kwargs: ``OmniFMTask``'s arguments (``embed_dim``, ``stack``, ``spalign_weight``,
            ``optimizer``, ``recalibrate_bn``); the CLI lists them with this class.
    """

    monitor, mode = "acc", "max"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        task_type: Literal["multi-class", "binary", "multi-label"] = "multi-class",
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        spatial_dims: Literal[2, 3] = 2,
        width: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if task_type == "binary" and num_classes != 2:
            raise ValueError(f"task_type 'binary' needs num_classes=2, got {num_classes}")
        self.check_spatial_dims(spatial_dims)
        self.task_type = task_type
        self.spatial_dims = spatial_dims
        self.encoder: nn.Module
        if spatial_dims == 3:
            self.encoder = VolumeTokenEncoder(
                backbone, in_channels, self.embed_dim, width, pretrained, weights
            )
        else:
            self.encoder = TimmTokenEncoder(
                backbone, in_channels, self.embed_dim, pretrained, weights
            )
        self.head = nn.Linear(self.embed_dim, num_classes)
        if task_type == "multi-label":
            metrics = {
                "acc": MultilabelAccuracy(num_classes),
                "f1": MultilabelF1Score(num_classes, average="macro"),
                "auroc": MultilabelAUROC(num_classes),
            }
        else:
            metrics = {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
                "auroc": MulticlassAUROC(num_classes),
            }
        self.set_metrics(MetricCollection(metrics))

    def encode(self, batch: Batch) -> Tensor:
        image = batch["image"]
        if image.ndim != self.spatial_dims + 2:
            kind = "volumes (B, C, D, H, W)" if self.spatial_dims == 3 else "images (B, C, H, W)"
            raise ValueError(
                f"the model classifies {kind} (spatial_dims {self.spatial_dims}) but got a batch "
                f"of shape {tuple(image.shape)}: set model.init_args.spatial_dims and the "
                "stack's spatial_dims to the data's"
            )
        return self.encoder(image)

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        if self.task_type == "multi-label":
            return F.binary_cross_entropy_with_logits(preds, batch["label"].float())
        return F.cross_entropy(preds, batch["label"].long().view(-1))

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        if self.task_type == "multi-label":
            metrics.update(preds.sigmoid(), batch["label"].long())
        else:
            metrics.update(preds.softmax(dim=-1), batch["label"].long().view(-1))
