"""Generated phantom data of one modality style as an image source (``omnifm.datasets.phantom``
renders it); no files."""

from __future__ import annotations

from typing import cast

import numpy as np

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.array import ArrayDataset
from omnifm.datasets.base import Split, TaskType
from omnifm.datasets.phantom import (
    PHANTOM_CLASSES,
    PhantomModality,
    check_phantom,
    generate_phantoms,
)

__all__ = ["PhantomDataModule"]


class PhantomDataModule(SourceDataModule):
    """Generated phantoms of one modality style (no files): 4 anatomy classes with masks.

    Items also carry `"mask"`, the (H, W) segmentation of the labelled structure.
    """

    num_classes = len(PHANTOM_CLASSES)
    task_type: TaskType = "multi-class"

    def __init__(
        self,
        modality: PhantomModality = "ct",
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        size: int = 32,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        root: str = ".",
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        check_phantom(modality, size, seed)
        if min(num_train, num_val, num_test) < 1:
            raise ValueError(
                "phantom split sizes (num_train, num_val, num_test) must be >= 1, "
                f"got ({num_train}, {num_val}, {num_test})"
            )
        self.modality = modality
        self.in_channels = 3 if modality == "pathology" else 1
        self.size = size
        self.seed = seed
        self.counts: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}

    def _build(self, split: Split) -> ArrayDataset:
        images, labels, masks = generate_phantoms(
            self.modality, self.size, self.seed, split, np.arange(self.counts[split])
        )
        return ArrayDataset(images, labels, "multi-class", masks=masks)

    def labels(self, split: Split) -> np.ndarray:
        """The anatomy class of each example."""
        return cast(ArrayDataset, self.dataset(split)).labels
