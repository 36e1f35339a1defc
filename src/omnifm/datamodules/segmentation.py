"""Segmentation pairs from folders as one image source: 2D images (JPEG, PNG, ...) or 3D volumes
(NIfTI, DICOM) read by ``omnifm.datasets.segmentation``, split and augmented here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from monai.transforms import Compose, RandAdjustContrastd, RandFlipd, Randomizable, RandRotate90d
from torch.utils.data import Dataset

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.base import Split, TaskType
from omnifm.datasets.segmentation import PairReader, SegmentationPairs, pair_files
from omnifm.datasets.splits import check_fractions, split_items

__all__ = ["SegmentationFolderDataModule"]


class SegmentationFolderDataModule(SourceDataModule):
    """Image and mask folders paired by file name, e.g. Kvasir-SEG's ``images/x.jpg`` with
    ``masks/x.jpg``; 3D volume pairs (``.nii``/``.nii.gz``, DICOM series folders or files)
    with ``spatial_dims: 3``. Files are read by MONAI's ``LoadImage``.

    Items: ``"image"`` float ``(C, *size)`` in [0, 1] and ``"mask"`` long ``(*size)``.
    Images: 2D ones are 8-bit (``/ 255``), converted to ``in_channels``; 3D volumes are
    clipped to ``intensity_range`` and scaled to [0, 1] (min-max per volume without it).
    Masks: with ``threshold`` set, ``mask > threshold`` is the foreground (lossy JPEG masks:
    127; 0/1 NIfTI masks: 0.5); with ``threshold: null`` the mask values are class indices.
    Both are resized to ``size`` (images by area averaging when shrinking, linear when
    enlarging; masks nearest). Train items get random flips, 90-degree rotations (square
    sizes) and contrast changes (MONAI transforms). The train/val/test split is a seeded
    shuffle of the pairs by name.

    Args:
        root: the folder holding ``images`` and ``masks``.
        images: image folder, relative to ``root``.
        masks: mask folder, relative to ``root``.
        modality: modality tag of this source (e.g. ``endoscopy``).
        num_classes: classes including background (2 for binary masks).
        in_channels: image channels delivered (2D: read as RGB for 3, grey for 1).
        spatial_dims: 2 for images, 3 for volumes.
        size: output size (one int for every axis, or one per axis); ``null`` keeps the size.
        threshold: foreground threshold of binary masks, or ``null`` for index masks.
        intensity_range: (low, high) window of 3D volumes, e.g. (-1000, 1000) for CT.
        augment: random augmentation of train items.
        val_fraction: fraction of the pairs for validation.
        test_fraction: fraction of the pairs for test.
        seed: seed of the split.
        max_items: use only this many pairs (the first after the seeded shuffle), e.g. for a
            quick try; ``null`` uses all.
        cache: decode and resize every pair once and keep it in memory (float16 images).
    """

    task_type: TaskType = "segmentation"

    def __init__(
        self,
        root: str = ".",
        images: str = "images",
        masks: str = "masks",
        modality: str = "unknown",
        num_classes: int = 2,
        in_channels: int = 3,
        spatial_dims: Literal[2, 3] = 2,
        size: int | list[int] | None = 256,
        threshold: float | None = 127.0,
        intensity_range: tuple[float, float] | None = None,
        augment: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        max_items: int | None = None,
        cache: bool = True,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if num_classes < 2 or in_channels < 1 or spatial_dims not in (2, 3):
            raise ValueError(
                "need num_classes >= 2 (with background), in_channels >= 1 and spatial_dims 2 "
                f"or 3, got {num_classes}, {in_channels} and {spatial_dims}"
            )
        if threshold is not None and num_classes != 2:
            raise ValueError(
                f"a mask threshold gives binary masks, but num_classes={num_classes}; "
                "set threshold: null for masks of class indices"
            )
        sizes = [size] * spatial_dims if isinstance(size, int) else size
        if sizes is not None and (len(sizes) != spatial_dims or min(sizes) < 1):
            raise ValueError(f"size must be a positive int or {spatial_dims} of them, got {size}")
        if max_items is not None and max_items < 3:
            raise ValueError(f"max_items must be >= 3 (train, val, test) or null, got {max_items}")
        self.images, self.masks = images, masks
        self.modality = modality
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.size = sizes
        self.threshold = threshold
        self.intensity_range = intensity_range
        self.augment = augment
        self.fractions = (val_fraction, test_fraction)
        self.seed = seed
        self.max_items = max_items
        self.cache = cache
        check_fractions(val_fraction, test_fraction)

    def _augmentation(self) -> Compose:
        keys = ["image", "mask"]
        steps: list[Randomizable] = [
            RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(self.spatial_dims)
        ]
        if self.size is not None and self.size[0] == self.size[1]:
            steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
        steps.append(RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25)))
        return Compose(steps)

    def pairs(self, split: Split) -> list[tuple[Path, Path]]:
        """The (image, mask) paths of `split`."""
        root = Path(self.root)
        pairs = pair_files(root / self.images, root / self.masks)
        if self.max_items is not None and self.max_items < len(pairs):
            keep = np.random.default_rng(self.seed).permutation(len(pairs))[: self.max_items]
            pairs = [pairs[i] for i in sorted(keep)]
        return split_items(pairs, split, *self.fractions, self.seed)

    def _build(self, split: Split) -> Dataset:
        augment = self._augmentation() if self.augment and split == "train" else None
        reader = PairReader(
            self.num_classes,
            self.in_channels,
            self.spatial_dims,
            self.size,
            self.threshold,
            self.intensity_range,
        )
        return SegmentationPairs(self.pairs(split), reader, augment, self.cache)

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "segmentation items have masks, not labels: a Dirichlet (label-skew) partition "
            "does not apply; use partition kind 'iid' or 'whole'"
        )
