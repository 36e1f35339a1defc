"""A task omnifm does not ship, as a user would write it: regress an image's mean brightness."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MetricCollection

from omnifm.encoders import TimmTokenEncoder
from omnifm.tasks import OmniFMTask


class BrightnessRegression(OmniFMTask):
    """Predict the mean intensity of an image from the OmniFM stack's suffix token.

    ``in_channels`` is linked from the data by the CLI; ``**kwargs`` are ``OmniFMTask``'s
    (``embed_dim``, ``stack``, ``spalign_weight``, ``optimizer``, ``recalibrate_bn``).
    """

    monitor, mode = "mae", "min"  # the main metric, lower is better

    def __init__(self, in_channels: int = 1, backbone: str = "resnet18", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = TimmTokenEncoder(backbone, in_channels, self.embed_dim)
        self.head = nn.Linear(self.embed_dim, 1)
        self.set_metrics(MetricCollection({"mae": MeanAbsoluteError()}))

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["image"].mean(dim=(1, 2, 3))

    def task_loss(self, preds: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.mse_loss(preds.squeeze(-1), self.target(batch))

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: dict) -> None:
        metrics.update(preds.squeeze(-1), self.target(batch))
