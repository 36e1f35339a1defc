"""Super-resolution pairs as one image source: HR patches of a folder of images (e.g. BreaKHis)
and their antialiased bicubic downsampling (``omnifm.datasets.super_resolution``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.base import SPLITS, Split, TaskType
from omnifm.datasets.breakhis import BREAKHIS_FIELDS, image_files
from omnifm.datasets.readers import ImageReader
from omnifm.datasets.splits import check_fractions, split_items
from omnifm.datasets.super_resolution import PatchPairs, patch_positions, read_patchable

__all__ = ["SuperResolutionDataModule"]


class SuperResolutionDataModule(SourceDataModule):
    """HR patches of the images in a folder and their LR versions (``downsample`` by
    ``scale``): random patches (with flips) for training, fixed seeded ones for val and test.

    The images are split by file, seeded: no image gives patches to two splits. Items:
    ``"image"`` LR ``(C, patch_size / scale, ...)`` and ``"target"`` HR ``(C, patch_size,
    patch_size)``, in [0, 1] (8-bit files, ``/ 255``). ``select`` keeps files whose BreaKHis
    name fields match, so each client of a federation can take its own subset, e.g.
    ``{class: [M]}`` (malignant) or ``{magnification: [100, 200, 400]}``; fields:
    ``BREAKHIS_FIELDS``.

    Args:
        root: the folder of HR images (``.png``, ``.jpg``, ``.tif``, ``.bmp``).
        modality: modality tag of this source.
        scale: 2, 4 or 8.
        patch_size: HR patch side, a multiple of ``scale``, at most the smallest image side.
        in_channels: 3 reads RGB, 1 grey.
        select: BreaKHis field -> accepted values; ``null`` keeps every image.
        patches_per_image: random train patches per image and epoch.
        eval_patches_per_image: fixed val/test patches per image.
        augment: random flips of train patches.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split and of the fixed patch positions.
    """

    num_classes = 0
    task_type: TaskType = "super-resolution"

    def __init__(
        self,
        root: str = ".",
        modality: str = "pathology",
        scale: int = 2,
        patch_size: int = 96,
        in_channels: int = 3,
        select: dict[str, list[str | int]] | None = None,
        patches_per_image: int = 16,
        eval_patches_per_image: int = 8,
        augment: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if scale not in (2, 4, 8) or patch_size < scale or patch_size % scale:
            raise ValueError(
                f"need scale 2, 4 or 8 and a patch_size that is a multiple of it, got scale "
                f"{scale} and patch_size {patch_size}"
            )
        if in_channels not in (1, 3) or min(patches_per_image, eval_patches_per_image) < 1:
            raise ValueError(
                "need in_channels 1 or 3 and patches_per_image, eval_patches_per_image >= 1, got "
                f"{in_channels}, {patches_per_image} and {eval_patches_per_image}"
            )
        unknown = sorted(set(select or {}) - set(BREAKHIS_FIELDS))
        if unknown:
            raise ValueError(f"unknown select fields {unknown}; use {list(BREAKHIS_FIELDS)}")
        self.modality = modality
        self.scale = scale
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.select = {k: {str(v) for v in values} for k, values in (select or {}).items()}
        self.patches_per_image = patches_per_image
        self.eval_patches_per_image = eval_patches_per_image
        self.augment = augment
        self.fractions = (val_fraction, test_fraction)
        self.seed = seed
        check_fractions(val_fraction, test_fraction)

    def files(self, split: Split | None = None) -> list[Path]:
        """The selected image files (of `split`, or all), sorted by name."""
        paths = image_files(Path(self.root), self.select)
        return paths if split is None else split_items(paths, split, *self.fractions, self.seed)

    def _build(self, split: Split) -> Dataset:
        reader = ImageReader(self.in_channels)
        images = [read_patchable(path, reader, self.patch_size) for path in self.files(split)]
        if split == "train":
            return PatchPairs(
                images, self.patch_size, self.scale, None, self.patches_per_image, self.augment
            )
        rng = np.random.default_rng([self.seed, SPLITS.index(split)])
        positions = patch_positions(images, self.patch_size, self.eval_patches_per_image, rng)
        return PatchPairs(images, self.patch_size, self.scale, positions, 1, False)

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "super-resolution items have no labels: a Dirichlet (label-skew) partition does not "
            "apply; use partition kind 'iid' or 'whole', or select to give clients subsets"
        )
