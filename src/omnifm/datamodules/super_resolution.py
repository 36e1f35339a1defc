"""Super-resolution pairs: HR patches of a folder of images (e.g. BreaKHis) and their
antialiased bicubic downsampling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datamodules.base import SPLITS, SourceDataModule, Split, TaskType
from omnifm.datamodules.files import ImageReader, decode, split_items

__all__ = [
    "BREAKHIS_FIELDS",
    "LowResPairs",
    "SuperResolutionDataModule",
    "downsample",
    "parse_breakhis",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_BREAKHIS = re.compile(
    r"^SOB_(?P<class>[BM])_(?P<type>[A-Z]+)-(?P<year>\d+)-(?P<patient>[^-]+)"
    r"-(?P<magnification>\d+)-(?P<sequence>\d+)$"
)
BREAKHIS_FIELDS = tuple(_BREAKHIS.groupindex)


def parse_breakhis(path: str | Path) -> dict[str, str]:
    """Fields of a BreaKHis file name, e.g. ``SOB_M_DC-14-2523-40-010.png`` -> class ``M``
    (malignant; ``B`` benign), type ``DC``, year ``14``, patient ``2523``, magnification
    ``40``, sequence ``010``."""
    match = _BREAKHIS.match(Path(path).name.split(".")[0])
    if match is None:
        raise ValueError(
            f"{path} is not a BreaKHis file name (SOB_<B|M>_<type>-<year>-<patient>-"
            "<magnification>-<sequence>.png); select needs BreaKHis names"
        )
    return match.groupdict()


def downsample(hr: Tensor, scale: int) -> Tensor:
    """``(..., C, H, W)`` in [0, 1] -> ``(..., C, H // scale, W // scale)``: bicubic with
    anti-aliasing (as PIL's and MATLAB's ``imresize``), clamped to [0, 1]."""
    batch = hr.reshape(-1, *hr.shape[-3:]).float()
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    lr = F.interpolate(batch, size=size, mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp(0, 1).reshape(*hr.shape[:-2], *size)


class LowResPairs(Dataset):
    """Items of ``dataset`` with ``"image"`` as the HR ``"target"`` and its ``downsample``
    as the LR ``"image"``; other keys pass through."""

    def __init__(self, dataset: Dataset, scale: int) -> None:
        self.source = dataset
        self.scale = scale

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = dict(self.source[index])
        hr = item.pop("image")
        return {**item, "image": downsample(hr, self.scale), "target": hr}


class _Patches(Dataset):
    """HR/LR patch pairs of in-memory uint8 images: ``positions`` (image, top, left) fixed, or
    ``per_image`` random patches (with random flips) per image and epoch, drawn from torch's
    random state so Lightning's seeding makes them reproducible."""

    def __init__(
        self,
        images: list[Tensor],
        patch: int,
        scale: int,
        positions: list[tuple[int, int, int]] | None,
        per_image: int,
        augment: bool,
    ) -> None:
        self.images, self.patch, self.scale = images, patch, scale
        self.positions, self.per_image, self.augment = positions, per_image, augment

    def __len__(self) -> int:
        if self.positions is not None:
            return len(self.positions)
        return len(self.images) * self.per_image

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.positions is not None:
            i, top, left = self.positions[index]
        else:
            i = index % len(self.images)
            h, w = self.images[i].shape[1:]
            top = int(torch.randint(0, h - self.patch + 1, ()))
            left = int(torch.randint(0, w - self.patch + 1, ()))
        hr = self.images[i][:, top : top + self.patch, left : left + self.patch].float() / 255
        if self.positions is None and self.augment:
            flips = [d for d, flip in zip((1, 2), torch.rand(2) < 0.5, strict=True) if flip]
            hr = hr.flip(flips) if flips else hr
        return {"image": downsample(hr, self.scale), "target": hr.contiguous()}


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
        split_items([0] * 3, "train", val_fraction, test_fraction, seed)  # checks the fractions

    def files(self, split: Split | None = None) -> list[Path]:
        """The selected image files (of `split`, or all), sorted by name."""
        folder = Path(self.root)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} not found")
        paths = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise ValueError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
        if self.select:
            paths = [
                p
                for p in paths
                if all(parse_breakhis(p)[k] in values for k, values in self.select.items())
            ]
            if not paths:
                raise ValueError(f"no image in {folder} matches select {self.select}")
        return paths if split is None else split_items(paths, split, *self.fractions, self.seed)

    def _load(self, path: Path, reader: ImageReader) -> Tensor:
        image = decode(reader, path)
        h, w = image.shape[1:]
        if min(h, w) < self.patch_size:
            raise ValueError(
                f"patch_size {self.patch_size} is larger than {path} ({h}x{w}); lower patch_size"
            )
        return image.round().clamp(0, 255).to(torch.uint8)

    def _build(self, split: Split) -> Dataset:
        reader = ImageReader(self.in_channels)
        images = [self._load(path, reader) for path in self.files(split)]
        if split == "train":
            return _Patches(
                images, self.patch_size, self.scale, None, self.patches_per_image, self.augment
            )
        rng = np.random.default_rng([self.seed, SPLITS.index(split)])
        positions = []
        for i, image in enumerate(images):
            h, w = image.shape[1:]
            for _ in range(self.eval_patches_per_image):
                top = int(rng.integers(0, h - self.patch_size + 1))
                positions.append((i, top, int(rng.integers(0, w - self.patch_size + 1))))
        return _Patches(images, self.patch_size, self.scale, positions, 1, False)

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "super-resolution items have no labels: a Dirichlet (label-skew) partition does not "
            "apply; use partition kind 'iid' or 'whole', or select to give clients subsets"
        )
