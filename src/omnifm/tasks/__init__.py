"""One LightningModule per task, all on ``OmniFMTask``."""

from omnifm.tasks.base import OmniFMTask, StackFactory
from omnifm.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask", "OmniFMTask", "StackFactory"]
