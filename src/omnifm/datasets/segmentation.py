"""Segmentation pairs from folders: image and mask files paired by name, the reader of one pair
(2D images or 3D volumes) and the dataset of pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, Resize, ScaleIntensity, ScaleIntensityRange
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datasets.readers import ImageReader, decode, plain, volume_loader
from omnifm.functional import can_convert, to_channels

__all__ = ["VOLUME_SUFFIXES", "PairReader", "SegmentationPairs", "pair_files"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".mha", ".mhd", ".nrrd")
Loader = Callable[[str], Tensor]


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


@dataclass
class PairReader:
    """Reads one (image, mask) pair as ``{"image" float16 (C, *size) in [0, 1], "mask" uint8
    (*size)}``: decoded with MONAI, scaled, converted to ``in_channels``, the mask binarised
    or checked against ``num_classes``, both resized to ``size``.

    2D images are 8-bit (``/ 255``); 3D volumes are clipped to ``intensity_range`` and scaled
    to [0, 1] (min-max per volume without it). With ``threshold`` set, ``mask > threshold``
    is the foreground; with ``None`` the mask values are class indices. Images are resized by
    area averaging when shrinking, linearly when enlarging; masks by nearest neighbour.
    """

    num_classes: int
    in_channels: int
    spatial_dims: int
    size: list[int] | None
    threshold: float | None
    intensity_range: tuple[float, float] | None
    _load: tuple[Loader, Loader] | None = field(default=None, init=False, repr=False)

    def _loaders(self) -> tuple[Loader, Loader]:
        if self.spatial_dims == 3:
            volume = volume_loader()
            return volume, volume
        return ImageReader(self.in_channels), ImageReader(1)

    def __call__(self, image_path: Path, mask_path: Path) -> dict[str, Tensor]:
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


class SegmentationPairs(Dataset):
    """Items ``{"image", "mask"}`` of paired files read by ``prepare``; optional MONAI
    augmentation drawn from torch's random state (so Lightning's seeding makes it
    reproducible)."""

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
