"""Fake Harvard Whole Brain Atlas fusion pairs: ``fusion/harvard/{CT-MRI,PET-MRI,SPECT-MRI}/
<MRI|partner>/<number>.png``, co-registered pairs with the same file name; MRI and CT grey
PNG (``L``), PET and SPECT RGB pseudo-colour PNG. 10 pairs of 48x48 per folder (the real
ones are 256x256; the fusion metrics need at least 41): the fewest that give the recipes'
15% validation and test splits two pairs each.

    python tests/data/fusion/data.py OUT  # writes OUT/fusion/harvard/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

PARTNERS = ("CT", "PET", "SPECT")


def generate(root: Path, seed: int = 0, pairs: int = 10, size: int = 48) -> Path:
    """Write the three pair folders below ``root/fusion/harvard``; return that folder."""
    folder = Path(root) / "fusion" / "harvard"
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    for p, partner in enumerate(PARTNERS):
        pair = folder / f"{partner}-MRI"
        for sub in ("MRI", partner):
            (pair / sub).mkdir(parents=True, exist_ok=True)
        for i in range(pairs):
            head = (yy / 0.9) ** 2 + (xx / 0.75) ** 2
            cy, cx = rng.uniform(-0.4, 0.4, 2)
            lesion = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
            mri = np.where(head < 1, 120 + 60 * np.cos(6 * head) + rng.normal(0, 8, head.shape), 0)
            if partner == "CT":  # bright skull, dark brain: grey
                out = np.where((head > 0.8) & (head < 1), 255, np.where(head < 0.8, 60, 0))
                image = Image.fromarray(out.astype(np.uint8))
            else:  # uptake in pseudo-colour: red core, yellow rim, blue background
                uptake = np.where(head < 1, 0.3 + 0.7 * lesion, 0)
                rgb = np.stack([uptake, uptake**2, 0.5 * (head < 1) * (1 - uptake)], axis=-1)
                image = Image.fromarray((255 * rgb).astype(np.uint8))
            name = f"{(p + 1) * 10000 + i + 1:05d}.png"
            Image.fromarray(mri.clip(0, 255).astype(np.uint8)).save(pair / "MRI" / name)
            image.save(pair / partner / name)
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
