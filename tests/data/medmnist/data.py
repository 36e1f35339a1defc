"""Fake MedMNIST v2 files in the official layout: ``medmnist/{flag}.npz`` (the 28x28 file name)
for every 2D flag, with ``{train,val,test}_images`` uint8 ``(N, 28, 28)`` (grey) or
``(N, 28, 28, 3)`` (RGB) and ``{split}_labels`` uint8 ``(N, 1)``, or ``(N, classes)`` of 0/1
for multi-label flags; 12/6/6 images per split (6: two per site when a file is split into 3).

    python tests/data/medmnist/data.py OUT  # writes OUT/medmnist/
"""

from __future__ import annotations

import sys
from pathlib import Path

import medmnist
import numpy as np

COUNTS = {"train": 12, "val": 6, "test": 6}


def generate(root: Path, seed: int = 0) -> Path:
    """Write ``root/medmnist/{flag}.npz`` for every 2D flag; return the folder."""
    folder = Path(root) / "medmnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for flag, info in medmnist.INFO.items():
        if flag.endswith("3d"):
            continue
        classes, channels = len(info["label"]), int(info["n_channels"])
        arrays = {}
        for split, n in COUNTS.items():
            if info["task"].startswith("multi-label"):
                labels = (rng.random((n, classes)) < 0.3).astype(np.uint8)
            else:
                labels = (np.arange(n) % classes)[:, None].astype(np.uint8)  # every class seen
            # brightness follows the first label, so the classes differ a little
            shape = (n, 28, 28) if channels == 1 else (n, 28, 28, channels)
            noise = rng.integers(0, 96, shape)
            level = 40 * labels[:, 0].reshape(-1, *[1] * (len(shape) - 1))
            arrays[f"{split}_images"] = (noise + level).clip(0, 255).astype(np.uint8)
            arrays[f"{split}_labels"] = labels
        np.savez_compressed(folder / f"{flag}.npz", **arrays)
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
