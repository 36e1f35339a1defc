"""MedMNIST v2 files (2D images and 3D volumes): their names, flags, modalities and task types,
and the reader of one split as an ``ArrayDataset``."""

from __future__ import annotations

import os

import medmnist

from omnifm.datasets.array import ArrayDataset
from omnifm.datasets.base import Split, TaskType

__all__ = [
    "MEDMNIST_2D_FLAGS",
    "MEDMNIST_3D_FLAGS",
    "MEDMNIST_3D_SIZES",
    "MEDMNIST_MODALITIES",
    "MEDMNIST_SIZES",
    "MEDMNIST_TASK_TYPES",
    "medmnist_filename",
    "read_medmnist",
]

MEDMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_3D_SIZES = (28, 64)
MEDMNIST_2D_FLAGS = tuple(flag for flag in medmnist.INFO if not flag.endswith("3d"))
MEDMNIST_3D_FLAGS = tuple(flag for flag in medmnist.INFO if flag.endswith("3d"))
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
    "organmnist3d": "ct",
    "nodulemnist3d": "ct",
    "adrenalmnist3d": "ct",  # shape masks segmented from CT
    "fracturemnist3d": "ct",
    "vesselmnist3d": "mra",  # shape masks of intracranial vessels from MRA
    "synapsemnist3d": "electron-microscopy",
}
MEDMNIST_TASK_TYPES: dict[str, TaskType] = {
    "multi-class": "multi-class",
    "ordinal-regression": "multi-class",
    "binary-class": "binary",
    "multi-label, binary-class": "multi-label",
}
"""MedMNIST's task names (``medmnist.INFO[flag]["task"]``) -> the task type of the items."""


def medmnist_filename(flag: str, size: int) -> str:
    """The file name MedMNIST uses: `{flag}.npz` for size 28, else `{flag}_{size}.npz`."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def read_medmnist(
    flag: str, root: str, size: int, split: Split, download: bool = False
) -> ArrayDataset:
    """The `split` of MedMNIST file `{root}/{flag}[_{size}].npz` in memory; `download` lets
    medmnist fetch a missing file into `root`. A missing or damaged file: one error saying
    how to fix it."""
    name = medmnist_filename(flag, size)
    path = os.path.join(root, name)
    if download:
        os.makedirs(root, exist_ok=True)
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"MedMNIST file not found: {path!r}; set `download: true` for {flag!r} or place "
            f"{name} there"
        )
    info = medmnist.INFO[flag]
    cls = getattr(medmnist, info["python_class"])
    try:
        data = cls(split=split, root=root, size=size, download=download)
    except Exception as err:  # np.load of a truncated file: BadZipFile, EOFError, ...
        fix = (
            "check the network, or place the file there by hand"
            if download
            else f"copy {name} there again, or delete it and set `download: true`"
        )
        raise ValueError(
            f"cannot read MedMNIST file {path!r} ({type(err).__name__}: {err}); it is "
            f"damaged or incomplete: {fix}"
        ) from err
    task_type = MEDMNIST_TASK_TYPES[info["task"]]
    dims = 3 if flag in MEDMNIST_3D_FLAGS else 2
    return ArrayDataset(data.imgs, data.labels, task_type, spatial_dims=dims)
