"""MedMNIST v2 (2D) files as one image source."""

from __future__ import annotations

import os
from typing import cast

import medmnist
import numpy as np

from omnifm.datamodules.base import ArrayDataset, SourceDataModule, Split, TaskType, reduce_labels

MEDMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_2D_FLAGS = tuple(flag for flag in medmnist.INFO if not flag.endswith("3d"))
MEDMNIST_MODALITIES: dict[str, str] = {
    "breastmnist": "ultrasound",
    "retinamnist": "fundus",
    "pneumoniamnist": "x-ray",
    "chestmnist": "x-ray",
    "dermamnist": "dermoscopy",
    "pathmnist": "histopathology",
    "bloodmnist": "microscopy",
    "octmnist": "oct",
    "organamnist": "ct",
    "organcmnist": "ct",
    "organsmnist": "ct",
    "tissuemnist": "microscopy",
}
_TASK_TYPES: dict[str, TaskType] = {
    "multi-class": "multi-class",
    "ordinal-regression": "multi-class",
    "binary-class": "binary",
    "multi-label, binary-class": "multi-label",
}


def medmnist_filename(flag: str, size: int) -> str:
    """The file name MedMNIST uses: `{flag}.npz` for size 28, else `{flag}_{size}.npz`."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


class MedMNISTDataModule(SourceDataModule):
    """One MedMNIST v2 2D dataset (e.g. breastmnist) read from `{root}/{flag}[_{size}].npz`.

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
        if flag not in MEDMNIST_2D_FLAGS:
            raise ValueError(
                f"unknown MedMNIST flag {flag!r}; use one of {list(MEDMNIST_2D_FLAGS)}"
            )
        if size not in MEDMNIST_SIZES:
            raise ValueError(f"MedMNIST size {size} is not available; use one of {MEDMNIST_SIZES}")
        self.flag = flag
        self.size = size
        self.download = download
        self.info = medmnist.INFO[flag]
        self.task_type = _TASK_TYPES[self.info["task"]]
        self.num_classes = len(self.info["label"])
        self.in_channels = int(self.info["n_channels"])
        self.modality = modality or MEDMNIST_MODALITIES.get(flag, "unknown")

    @property
    def path(self) -> str:
        """The file this source reads."""
        return os.path.join(self.root, medmnist_filename(self.flag, self.size))

    def _medmnist(self, split: Split) -> medmnist.dataset.MedMNIST:
        if self.download:
            os.makedirs(self.root, exist_ok=True)
        elif not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"MedMNIST file not found: {self.path!r}; set `download: true` for "
                f"{self.flag!r} or place {medmnist_filename(self.flag, self.size)} there"
            )
        cls = getattr(medmnist, self.info["python_class"])
        try:
            return cls(split=split, root=self.root, size=self.size, download=self.download)
        except Exception as err:  # np.load of a truncated file: BadZipFile, EOFError, ...
            name = medmnist_filename(self.flag, self.size)
            fix = (
                "check the network, or place the file there by hand"
                if self.download
                else f"copy {name} there again, or delete it and set `download: true`"
            )
            raise ValueError(
                f"cannot read MedMNIST file {self.path!r} ({type(err).__name__}: {err}); it is "
                f"damaged or incomplete: {fix}"
            ) from err

    def prepare_data(self) -> None:
        """Fetch the file once when `download` is set."""
        if self.download:
            self._medmnist("train")

    def _build(self, split: Split) -> ArrayDataset:
        data = self._medmnist(split)
        return ArrayDataset(data.imgs, data.labels, self.task_type)

    def labels(self, split: Split) -> np.ndarray:
        """One int label per example (multi-label: first positive, or num_classes if none)."""
        return reduce_labels(cast(ArrayDataset, self.dataset(split)).labels)
