"""Segmentation pairs from folders: 2D images (JPEG, PNG, ...) or 3D volumes (NIfTI, DICOM)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandFlipd,
    Randomizable,
    RandRotate90d,
    Resize,
    ScaleIntensity,
    ScaleIntensityRange,
)
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datamodules.base import (
    SourceDataModule,
    Split,
    TaskType,
    can_convert,
    to_channels,
)
from omnifm.datamodules.files import ImageReader, decode, plain, split_items, volume_loader

__all__ = ["SegmentationFolderDataModule", "pair_files"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".mha", ".mhd", ".nrrd")


def _key(path: Path) -> str:
    """The name that pairs an image with its mask: the file name without its extension(s)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name  # a DICOM series is a folder


def _entries(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} not found")
    entries: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        key = _key(path)
        if key in entries:
            raise ValueError(f"{entries[key]} and {path} in {folder} have the same name {key!r}")
        entries[key] = path
    if not entries:
        raise ValueError(f"{what} folder {folder} is empty")
    return entries


def pair_files(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths paired by file name without extension, sorted by name.

    Every image needs a mask and every mask an image; otherwise a ValueError names them.
    """
    found = _entries(images, "image"), _entries(masks, "mask")
    for (have, what), (other, where) in zip(
        zip(found, ("image", "mask"), strict=True),
        zip(reversed(found), (masks, images), strict=True),
        strict=True,
    ):
        alone = sorted(str(have[k]) for k in set(have) - set(other))
        if alone:
            more = f" (and {len(alone) - 3} more)" if len(alone) > 3 else ""
            raise ValueError(
                f"{what} {', '.join(alone[:3])}{more} has no partner of the same name in {where}"
            )
    return [(found[0][k], found[1][k]) for k in sorted(found[0])]


class _PairDataset(Dataset):
    """Items ``{"image", "mask"}`` of paired files; optional MONAI augmentation drawn from
    torch's random state (so Lightning's seeding makes it reproducible)."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        prepare: Callable[[Path, Path], dict[str, Tensor]],
        augment: Compose | None,
        cache: bool,
    ) -> None:
        self.pairs = pairs
        self.prepare = prepare
        self.augment = augment
        self.items = [prepare(*pair) for pair in pairs] if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.items[index] if self.items is not None else self.prepare(*self.pairs[index])
        image, mask = item["image"].float(), item["mask"]
        if self.augment is not None:
            self.augment.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ())))
            tracking = get_track_meta()
            set_track_meta(False)  # plain tensors: MONAI's metadata would cost more than a flip
            try:
                out = self.augment({"image": image, "mask": mask[None].float()})
            finally:
                set_track_meta(tracking)
            image, mask = plain(out["image"]), plain(out["mask"])[0]
        return {"image": image.contiguous(), "mask": mask.long().contiguous()}


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
        self._load: tuple[Callable[[str], Tensor], Callable[[str], Tensor]] | None = None
        split_items([0] * 3, "train", val_fraction, test_fraction, seed)  # checks the fractions

    # loading ------------------------------------------------------------------------------
    def _loaders(self) -> tuple[Callable[[str], Tensor], Callable[[str], Tensor]]:
        if self.spatial_dims == 3:
            volume = volume_loader()
            return volume, volume
        return ImageReader(self.in_channels), ImageReader(1)

    def _prepare(self, image_path: Path, mask_path: Path) -> dict[str, Tensor]:
        """Decode, scale, binarise and resize one pair."""
        if self._load is None:
            self._load = self._loaders()
        load_image, load_mask = self._load
        image, mask = decode(load_image, image_path), decode(load_mask, mask_path)
        if image.shape[1:] != mask.shape[1:]:
            raise ValueError(
                f"image {image_path} is {tuple(image.shape[1:])} but its mask {mask_path} is "
                f"{tuple(mask.shape[1:])}"
            )
        if mask.shape[0] != 1:
            raise ValueError(f"mask {mask_path} has {mask.shape[0]} channels; masks need one")
        if self.spatial_dims == 2:
            image = image / 255
        elif self.intensity_range is not None:
            low, high = self.intensity_range
            image = plain(ScaleIntensityRange(low, high, 0, 1, clip=True)(image))
        else:
            image = plain(ScaleIntensity(0, 1)(image))
        if not can_convert(image.shape[0], self.in_channels):
            raise ValueError(
                f"{image_path} has {image.shape[0]} channels; cannot deliver in_channels="
                f"{self.in_channels}"
            )
        image = to_channels(image, self.in_channels)
        mask = mask > self.threshold if self.threshold is not None else mask.round()
        if int(mask.max()) >= self.num_classes or int(mask.min()) < 0:
            raise ValueError(
                f"mask {mask_path} has values outside [0, {self.num_classes - 1}]; set "
                "num_classes, or a threshold for binary masks"
            )
        if self.size is not None and list(image.shape[1:]) != self.size:
            # area averaging when shrinking (alias-free, fast), linear when enlarging
            shrink = all(s <= have for s, have in zip(self.size, image.shape[1:], strict=True))
            linear = "bilinear" if self.spatial_dims == 2 else "trilinear"
            image = plain(Resize(self.size, mode="area" if shrink else linear)(image))
            mask = plain(Resize(self.size, mode="nearest-exact")(mask.float()))
        return {"image": image.clamp(0, 1).half(), "mask": mask[0].to(torch.uint8)}

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
        return _PairDataset(self.pairs(split), self._prepare, augment, self.cache)

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "segmentation items have masks, not labels: a Dirichlet (label-skew) partition "
            "does not apply; use partition kind 'iid' or 'whole'"
        )
