"""Super-resolution items: HR images or patches with their antialiased bicubic downsampling as
the LR input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datasets.readers import ImageReader, decode

__all__ = ["LowResPairs", "PatchPairs", "downsample", "patch_positions", "read_patchable"]

Position = tuple[int, int, int]  # (image, top, left)


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


def read_patchable(path: Path, reader: ImageReader, patch_size: int) -> Tensor:
    """The 8-bit image at `path` as uint8 ``(C, H, W)``; a ValueError when a side is below
    `patch_size`."""
    image = decode(reader, path)
    h, w = image.shape[1:]
    if min(h, w) < patch_size:
        raise ValueError(
            f"patch_size {patch_size} is larger than {path} ({h}x{w}); lower patch_size"
        )
    return image.round().clamp(0, 255).to(torch.uint8)


def patch_positions(
    images: list[Tensor], patch: int, per_image: int, rng: np.random.Generator
) -> list[Position]:
    """`per_image` patch positions (image, top, left) drawn from `rng` for every image."""
    positions = []
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        for _ in range(per_image):
            top = int(rng.integers(0, h - patch + 1))
            positions.append((i, top, int(rng.integers(0, w - patch + 1))))
    return positions


class PatchPairs(Dataset):
    """HR/LR patch pairs of in-memory uint8 images: ``positions`` (image, top, left) fixed, or
    ``per_image`` random patches (with random flips) per image and epoch, drawn from torch's
    random state so Lightning's seeding makes them reproducible."""

    def __init__(
        self,
        images: list[Tensor],
        patch: int,
        scale: int,
        positions: list[Position] | None,
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
