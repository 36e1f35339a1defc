"""Fake MedMNIST v2 3D files in the official layout: ``medmnist3d/{flag}.npz`` and
``{flag}_64.npz`` for every 3D flag, with ``{train,val,test}_images`` uint8 ``(N, S, S, S)``
volumes (S = 28 or 64) and ``{split}_labels`` uint8 ``(N, 1)``; 12/6/6 volumes per split.

    python tests/data/medmnist3d/data.py OUT  # writes OUT/medmnist3d/
"""

from __future__ import annotations

import sys
from pathlib import Path

import medmnist
import numpy as np

COUNTS = {"train": 12, "val": 6, "test": 6}


def generate(root: Path, seed: int = 0) -> Path:
    """Write ``root/medmnist3d/{flag}[_64].npz`` for every 3D flag; return the folder."""
    folder = Path(root) / "medmnist3d"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for flag, info in medmnist.INFO.items():
        if not flag.endswith("3d"):
            continue
        classes = len(info["label"])
        for size, name in ((28, f"{flag}.npz"), (64, f"{flag}_64.npz")):
            arrays = {}
            for split, n in COUNTS.items():
                labels = (np.arange(n) % classes)[:, None].astype(np.uint8)  # every class seen
                # a sphere whose radius follows the label, as a shape mask of the real files
                grid = np.linalg.norm(np.indices((size,) * 3) - size / 2, axis=0)
                radius = size / 6 * (1 + labels[:, 0] / classes)
                noise = rng.random((n, size, size, size)) < 0.02
                volumes = (grid[None] < radius[:, None, None, None]) ^ noise
                arrays[f"{split}_images"] = (255 * volumes).astype(np.uint8)
                arrays[f"{split}_labels"] = labels
            np.savez_compressed(folder / name, **arrays)
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
