"""Fake BreaKHis histopathology images: ``breakhis/SOB_<B|M>_<type>-<year>-<patient>-
<magnification>-<sequence>.png``, RGB PNG, 4 benign and 4 malignant (every tumour type once,
magnifications 40X to 400X), 80x52 with the real 700x460's aspect ratio: pink stroma with
purple nuclei.

    python tests/data/breakhis/data.py OUT  # writes OUT/breakhis/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = (
    "SOB_B_A-14-22549AB-40-001",
    "SOB_B_F-14-25197-100-001",
    "SOB_B_PT-14-21998AB-200-001",
    "SOB_B_TA-14-3411F-400-001",
    "SOB_M_DC-14-2523-40-010",
    "SOB_M_LC-14-12204-100-001",
    "SOB_M_MC-14-10147-200-001",
    "SOB_M_PC-14-9146-400-001",
)


def generate(root: Path, seed: int = 0, width: int = 80, height: int = 52) -> Path:
    """Write ``root/breakhis/*.png``; return the folder."""
    folder = Path(root) / "breakhis"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    for name in NAMES:
        image = np.array([230, 170, 200]) + rng.normal(0, 10, (height, width, 3))
        for cy, cx in zip(rng.integers(0, height, 25), rng.integers(0, width, 25), strict=True):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 6] = (110, 60, 150)  # a nucleus
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
