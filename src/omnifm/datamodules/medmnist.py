"""MedMNIST v2 files, 2D or 3D, as one image source (``omnifm.datasets.medmnist`` reads them)."""

from __future__ import annotations

import os
from typing import cast

import medmnist
import numpy as np

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.array import ArrayDataset, reduce_labels
from omnifm.datasets.base import Split
from omnifm.datasets.medmnist import (
    MEDMNIST_2D_FLAGS,
    MEDMNIST_3D_FLAGS,
    MEDMNIST_3D_SIZES,
    MEDMNIST_MODALITIES,
    MEDMNIST_SIZES,
    MEDMNIST_TASK_TYPES,
    medmnist_filename,
    read_medmnist,
)

__all__ = ["MedMNISTDataModule"]


class MedMNISTDataModule(SourceDataModule):
    """One MedMNIST v2 dataset read from `{root}/{flag}[_{size}].npz`: a 2D one (e.g.
    breastmnist; sizes 28, 64, 128, 224) or a 3D one (every `*mnist3d` flag, e.g.
    adrenalmnist3d; sizes 28 and 64), whose items are `(1, D, H, W)` volumes
    (`spatial_dims` 3).

    download: let medmnist fetch a missing file into `root` (only in `prepare_data`/first use).
    modality: the modality tag; default from the flag (e.g. breastmnist -> "ultrasound").
    """

    def __init__(
        self,
        flag: str,
        root: str = ".",
        size: int = 28,
        download: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        modality: str | None = None,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        flags = (*MEDMNIST_2D_FLAGS, *MEDMNIST_3D_FLAGS)
        if flag not in flags:
            raise ValueError(f"unknown MedMNIST flag {flag!r}; use one of {list(flags)}")
        self.spatial_dims = 3 if flag in MEDMNIST_3D_FLAGS else 2
        sizes = MEDMNIST_3D_SIZES if self.spatial_dims == 3 else MEDMNIST_SIZES
        if size not in sizes:
            raise ValueError(
                f"MedMNIST size {size} is not available for {flag!r}; use one of {sizes}"
            )
        self.flag = flag
        self.size = size
        self.download = download
        self.info = medmnist.INFO[flag]
        self.task_type = MEDMNIST_TASK_TYPES[self.info["task"]]
        self.num_classes = len(self.info["label"])
        self.in_channels = int(self.info["n_channels"])
        self.modality = modality or MEDMNIST_MODALITIES.get(flag, "unknown")

    @property
    def path(self) -> str:
        """The file this source reads."""
        return os.path.join(self.root, medmnist_filename(self.flag, self.size))

    def prepare_data(self) -> None:
        """Fetch the file once when `download` is set."""
        if self.download:
            read_medmnist(self.flag, self.root, self.size, "train", self.download)

    def _build(self, split: Split) -> ArrayDataset:
        return read_medmnist(self.flag, self.root, self.size, split, self.download)

    def labels(self, split: Split) -> np.ndarray:
        """One int label per example (multi-label: first positive, or num_classes if none)."""
        return reduce_labels(cast(ArrayDataset, self.dataset(split)).labels)
