"""File readers shared by the folder datasets: 2D images and 3D volumes with MONAI, PIL images."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.data import PILReader
from monai.transforms import LoadImage
from monai.utils import convert_to_tensor
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "ImageReader", "decode", "open_image", "plain", "volume_loader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


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


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """The image file at `path` opened with PIL; one ValueError naming the file when it (or
    what is done with it inside) fails to read."""
    try:
        with Image.open(path) as img:
            yield img
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
