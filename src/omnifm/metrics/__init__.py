"""torchmetrics Metrics of the tasks that torchmetrics itself lacks: VQA answer accuracy with
unknown answers, and image-fusion quality against both sources."""

from omnifm.metrics.fusion import (
    FusedEntropy,
    FusedMutualInformation,
    FusedSSIM,
    FusedVIF,
    FusionMetric,
)
from omnifm.metrics.vqa import AnswerAccuracy

__all__ = [
    "AnswerAccuracy",
    "FusedEntropy",
    "FusedMutualInformation",
    "FusedSSIM",
    "FusedVIF",
    "FusionMetric",
]
