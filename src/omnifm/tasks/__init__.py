"""One LightningModule per task, all on ``OmniFMTask``."""

from omnifm.tasks.base import OmniFMTask, StackFactory
from omnifm.tasks.classification import ClassificationTask
from omnifm.tasks.fusion import FusionTask
from omnifm.tasks.multitask import MultiTask
from omnifm.tasks.segmentation import SegmentationTask
from omnifm.tasks.super_resolution import SuperResolutionTask
from omnifm.tasks.vqa import VQATask

__all__ = [
    "ClassificationTask",
    "FusionTask",
    "MultiTask",
    "OmniFMTask",
    "SegmentationTask",
    "StackFactory",
    "SuperResolutionTask",
    "VQATask",
]
