"""Phantoms for the dense tasks: binary segmentation masks, and LR/HR super-resolution pairs."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from omnifm.datamodules.phantom import PhantomDataModule
from omnifm.datasets.array import ArrayDataset
from omnifm.datasets.base import Split, TaskType
from omnifm.datasets.super_resolution import LowResPairs

__all__ = ["PhantomSegmentationDataModule", "PhantomSuperResolutionDataModule"]


class PhantomSegmentationDataModule(PhantomDataModule):
    """``PhantomDataModule`` as a segmentation source: 2 classes, background and the
    anatomy structure (items ``"image"`` and ``"mask"``, plus the anatomy ``"label"``)."""

    num_classes = 2
    task_type: TaskType = "segmentation"


class PhantomSuperResolutionDataModule(PhantomDataModule):
    """``PhantomDataModule`` as a super-resolution source: the phantom of side ``size`` is
    the HR ``"target"``, its antialiased bicubic downsampling by ``scale`` the ``"image"``.

    Args:
        scale: 2, 4 or 8; ``size`` must be a multiple of it.
        **kwargs: ``PhantomDataModule``'s arguments (``modality``, ``size``, counts, seed).
    """

    num_classes = 0
    task_type: TaskType = "super-resolution"

    def __init__(self, scale: int = 2, size: int = 64, **kwargs: Any) -> None:
        super().__init__(size=size, **kwargs)
        if scale not in (2, 4, 8) or size % scale:
            raise ValueError(
                f"need scale 2, 4 or 8 dividing the phantom size, got scale {scale}, size {size}"
            )
        self.scale = scale

    def _build(self, split: Split) -> LowResPairs:
        return LowResPairs(super()._build(split), self.scale)

    def labels(self, split: Split) -> np.ndarray:
        """The anatomy class of each example."""
        return cast(ArrayDataset, cast(LowResPairs, self.dataset(split)).source).labels
