"""File helpers shared by the folder datamodules: decoding with MONAI, seeded splits."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import PILReader
from monai.transforms import LoadImage
from monai.utils import convert_to_tensor
from PIL import Image
from torch import Tensor

from omnifm.datamodules.base import Split

__all__ = ["ImageReader", "decode", "plain", "split_items", "volume_loader"]


class ImageReader:
    """A reader of 2D files (MONAI's ``PILReader``) giving ``(C, H, W)`` in row-major order:
    RGB for 3 channels, grey for 1 (PIL converts palettes, alpha and 16-bit files)."""

    def __init__(self, channels: int) -> None:
        mode = "RGB" if channels == 3 else "L"
        convert = partial(Image.Image.convert, mode=mode)
        self.reader = PILReader(converter=convert, reverse_indexing=False)

    def __call__(self, path: str) -> Tensor:
        data, _ = self.reader.get_data(self.reader.read(path))
        array = torch.from_numpy(np.array(data))  # a writable copy
        return array[None] if array.ndim == 2 else array.movedim(-1, 0)


def volume_loader() -> LoadImage:
    """MONAI ``LoadImage`` of 3D volumes (NIfTI, DICOM series or files, ...) as
    ``(C, *spatial)``, the reader picked from the file."""
    with warnings.catch_warnings():
        # LoadImage registers every reader; where pydicom is installed but nvImageCodec is not
        # (any machine without a GPU) MONAI's optional pydicom plugin warns: harmless here
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return LoadImage(image_only=True, ensure_channel_first=True)
        finally:
            logger.setLevel(level)


def plain(x: Tensor) -> Tensor:
    """A plain ``torch.Tensor`` of a MONAI ``MetaTensor`` (no metadata to carry along)."""
    return convert_to_tensor(x, track_meta=False)


def decode(loader: Callable[[str], Tensor], path: Path) -> Tensor:
    """The file at `path` as a float tensor; one ValueError naming the file when it fails."""
    try:
        return plain(loader(str(path))).float()
    except Exception as err:  # MONAI reports a failed read in several ways
        raise ValueError(f"cannot decode {path}: {type(err).__name__}: {err}") from err


def split_items(
    items: Sequence[Any], split: Split, val_fraction: float, test_fraction: float, seed: int
) -> list[Any]:
    """The `split` part of `items` after a seeded shuffle (test first, then val, the rest
    train); each split gets at least one item when its fraction is above zero."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    n = len(items)
    sizes = [max(round(f * n), 1) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    if sum(sizes) >= n:
        raise ValueError(
            f"{n} items are too few for a train split beside {sizes[1]} val and {sizes[0]} test "
            "items; add data or lower val_fraction / test_fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    bounds = {"test": (0, sizes[0]), "val": (sizes[0], sum(sizes)), "train": (sum(sizes), n)}
    start, stop = bounds[split]
    return [items[i] for i in sorted(order[start:stop])]
