"""Co-registered image pairs for multimodal fusion (e.g. the Harvard Whole Brain Atlas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from omnifm.datamodules.base import SPLITS, SourceDataModule, Split, TaskType
from omnifm.datamodules.files import split_items

__all__ = ["FusionPairsDataModule", "PairDataset"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


class FusionPairsDataModule(SourceDataModule):
    """Pairs of co-registered images in two sub-folders of ``root``, matched by file name.

    Layout: ``root/<first>/x.png`` with ``root/<second>/x.png``, as in
    ``fusion/harvard/PET-MRI/{MRI,PET}``. Items: ``"image"``, the ``first`` image (the
    structural MRI) as grey ``(1, S, S)``; ``"partner"``, the ``second`` image (CT, PET or
    SPECT) as RGB ``(3, S, S)``: pseudo-colour PET/SPECT as they are, grey CT repeated, so
    ``FusionTask`` fuses every pair in YCbCr and a grey partner gives a grey result.

    Every name must be in both folders and every pair must have one size; otherwise one
    error lists the offending names. Pairs are split at random (``seed``) into train, val
    and test by name; note that neighbouring slices of one brain may then fall into
    different splits. Images are resized to ``size`` (bicubic) once and kept in memory.

    Args:
        root: the pair folder (relative paths resolve against the federated ``root``).
        first: sub-folder of the structural images.
        second: sub-folder of the partner images; ``None``: the only other sub-folder.
        size: image side after resizing (at least 41, for VIF).
        val_fraction: share of pairs for validation.
        test_fraction: share of pairs for testing.
        seed: seed of the split.
        modality: client tag; default the ``second`` folder's name in lower case.
    """

    num_classes = 0
    in_channels = 1
    task_type: TaskType = "fusion"

    def __init__(
        self,
        root: str = "fusion/harvard/PET-MRI",
        first: str = "MRI",
        second: str | None = None,
        size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        modality: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if size < 41:
            raise ValueError(f"size must be >= 41 (VIF's smallest image), got {size}")
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(
                "need val_fraction > 0, test_fraction > 0 and their sum below 1, got "
                f"{val_fraction} and {test_fraction}"
            )
        self.first = first
        self.second = second
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self._modality = modality
        self._names: dict[Split, list[str]] | None = None

    @property
    def modality(self) -> str:  # type: ignore[override]
        return self._modality or self.folders()[1].name.lower()

    def with_root(self, root: str) -> None:
        super().with_root(root)
        self._names = None

    def folders(self) -> tuple[Path, Path]:
        """The ``first`` and ``second`` folders."""
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"fusion pair folder {root} not found; it needs two sub-folders of images with "
                "matching file names, e.g. MRI/ and PET/ (set the data root, e.g. ../shared/data)"
            )
        subs = sorted(p.name for p in root.iterdir() if p.is_dir())
        if self.first not in subs:
            raise FileNotFoundError(f"{root} has no sub-folder {self.first!r}; it has {subs}")
        second = self.second
        if second is None:
            others = [s for s in subs if s != self.first]
            if len(others) != 1:
                raise ValueError(
                    f"{root} has sub-folders {subs}: set `second` to the partner folder"
                )
            second = others[0]
        elif second not in subs:
            raise FileNotFoundError(f"{root} has no sub-folder {second!r}; it has {subs}")
        return root / self.first, root / second

    def pair_names(self) -> list[str]:
        """File names present in both folders with one size; raises listing any that are not."""
        a, b = self.folders()
        names = [
            {p.name for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} for f in (a, b)
        ]
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

    def names(self, split: Split) -> list[str]:
        """The pair names of ``split``."""
        if self._names is None:
            names, fractions = self.pair_names(), (self.val_fraction, self.test_fraction)
            self._names = {s: split_items(names, s, *fractions, self.seed) for s in SPLITS}
        return self._names[split]

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "fusion pairs have no labels to partition by; use partition kind 'iid' (or one "
            "client per folder)"
        )

    def _load(self, path: Path, mode: str) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size), Image.Resampling.BICUBIC)
                return np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err

    def _build(self, split: Split) -> PairDataset:
        a, b = self.folders()
        names = self.names(split)
        first = np.stack([self._load(a / n, "L") for n in names]) if names else np.zeros(0)
        second = np.stack([self._load(b / n, "RGB") for n in names]) if names else np.zeros(0)
        return PairDataset(first, second, names)


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _show(items: list[str], limit: int = 10) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
