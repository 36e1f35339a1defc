"""Tiny fake datasets in the real data's on-disk formats (the way torchgeo's tests/data do it):
one ``tests/data/<dataset>/data.py`` per folder of ``../shared/data`` that a recipe reads, each
with ``generate(root)`` writing ``root/<folder>`` exactly as the real folder is laid out (file
names, formats, image modes, JSON fields), but a few small images. ``GENERATORS`` maps the
folder name below the data root to its generator; ``generate_all`` builds a whole fake data
root. Nothing here copies real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .brats2013 import data as brats2013
from .breakhis import data as breakhis
from .fusion import data as fusion
from .medmnist import data as medmnist
from .medmnist3d import data as medmnist3d
from .polyp import data as polyp
from .vqa_rad import data as vqa_rad

GENERATORS: dict[str, Callable[[Path], Path]] = {
    "brats2013": brats2013.generate,
    "breakhis": breakhis.generate,
    "fusion": fusion.generate,
    "medmnist": medmnist.generate,
    "medmnist3d": medmnist3d.generate,
    "polyp": polyp.generate,
    "vqa_rad": vqa_rad.generate,
}


def generate_all(root: Path) -> Path:
    """A fake ``../shared/data``: every dataset of ``GENERATORS`` written below ``root``."""
    for generate in GENERATORS.values():
        generate(root)
    return root
