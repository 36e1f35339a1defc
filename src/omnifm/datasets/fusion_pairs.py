"""Co-registered image pairs for multimodal fusion (e.g. the Harvard Whole Brain Atlas): the
dataset of pairs in memory and the readers of a pair folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from omnifm.datasets.readers import IMAGE_SUFFIXES, open_image

__all__ = ["PairDataset", "pair_folders", "pair_names", "read_resized"]


class PairDataset(Dataset):
    """Items ``{"image" (1, S, S), "partner" (3, S, S), "name"}`` from uint8 arrays in memory:
    ``first`` (N, S, S) grey, ``second`` (N, S, S, 3) RGB."""

    def __init__(self, first: np.ndarray, second: np.ndarray, names: list[str]) -> None:
        if not len(first) == len(second) == len(names):
            raise ValueError(
                f"need as many first images, second images and names, got {len(first)}, "
                f"{len(second)} and {len(names)}"
            )
        self.first, self.second, self.names = first, second, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": torch.from_numpy(self.first[i]).float().div(255.0)[None],
            "partner": torch.from_numpy(self.second[i]).float().div(255.0).permute(2, 0, 1),
            "name": self.names[i],
        }


def pair_folders(root: Path, first: str, second: str | None) -> tuple[Path, Path]:
    """The ``first`` and ``second`` sub-folders of `root`; `second` ``None``: the only other."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"fusion pair folder {root} not found; it needs two sub-folders of images with "
            "matching file names, e.g. MRI/ and PET/ (set the data root, e.g. ../shared/data)"
        )
    subs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if first not in subs:
        raise FileNotFoundError(f"{root} has no sub-folder {first!r}; it has {subs}")
    if second is None:
        others = [s for s in subs if s != first]
        if len(others) != 1:
            raise ValueError(f"{root} has sub-folders {subs}: set `second` to the partner folder")
        second = others[0]
    elif second not in subs:
        raise FileNotFoundError(f"{root} has no sub-folder {second!r}; it has {subs}")
    return root / first, root / second


def pair_names(a: Path, b: Path) -> list[str]:
    """Image file names present in both folders with one size, sorted; raises listing any
    that are not."""
    names = [{p.name for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} for f in (a, b)]
    only = [sorted(names[0] - names[1]), sorted(names[1] - names[0])]
    if only[0] or only[1]:
        raise ValueError(
            f"unmatched fusion pairs in {a.parent}: only in {a.name}/: {_show(only[0])}; "
            f"only in {b.name}/: {_show(only[1])}. Every image needs its partner with the "
            "same file name"
        )
    if not names[0]:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {a} and {b}")
    shared = sorted(names[0])
    bad = []
    for name in shared:
        sizes = [_size(f / name) for f in (a, b)]
        if sizes[0] != sizes[1]:
            bad.append(f"{name} {sizes[0][0]}x{sizes[0][1]} vs {sizes[1][0]}x{sizes[1][1]}")
    if bad:
        raise ValueError(
            f"fusion pairs of different sizes in {a.parent} ({a.name} vs {b.name}): "
            f"{_show(bad)}; pairs must be co-registered images of one size"
        )
    return shared


def read_resized(path: Path, mode: str, size: int) -> np.ndarray:
    """The image at `path` in PIL `mode` (``L``, ``RGB``), resized to `size` x `size`
    (bicubic) where it is not, as uint8."""
    with open_image(path) as img:
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8)


def _size(path: Path) -> tuple[int, int]:
    with open_image(path) as img:
        return img.size


def _show(items: list[str], limit: int = 10) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
