"""BreaKHis file names: their fields, and the listing of a folder of images selected by them."""

from __future__ import annotations

import re
from pathlib import Path

from omnifm.datasets.readers import IMAGE_SUFFIXES

__all__ = ["BREAKHIS_FIELDS", "image_files", "parse_breakhis"]

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


def image_files(folder: Path, select: dict[str, set[str]] | None = None) -> list[Path]:
    """The image files of `folder` (``IMAGE_SUFFIXES``), sorted by name; with `select`, only
    those whose BreaKHis name fields are among the accepted values (field -> values)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    paths = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise ValueError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
    if select:
        paths = [
            p for p in paths if all(parse_breakhis(p)[k] in values for k, values in select.items())
        ]
        if not paths:
            raise ValueError(f"no image in {folder} matches select {select}")
    return paths
