"""Fake colonoscopy polyp folders in the Kvasir-SEG and CVC-ClinicDB layout:
``polyp/{kvasir-seg,cvc-clinicdb}/images/<name>.jpg`` (RGB JPEG) with ``masks/<name>.jpg`` of
the same name (lossy RGB JPEG, white polyp on black: the readers threshold at 127). Kvasir-SEG
names are 25-character ids, CVC-ClinicDB's are numbers, and CVC-ClinicDB has a README.txt
beside its folders. 15 pairs of 64x64 per hospital (the real ones are 256x256): the fewest
that give the recipes' 10% validation split two pairs.

    python tests/data/polyp/data.py OUT  # writes OUT/polyp/
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ID_CHARS = list(string.ascii_lowercase + string.digits)


def generate(root: Path, seed: int = 0, pairs: int = 15, size: int = 64) -> Path:
    """Write ``root/polyp/`` with two hospitals of ``pairs`` image/mask pairs; return it."""
    folder = Path(root) / "polyp"
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for hospital in ("kvasir-seg", "cvc-clinicdb"):
        for sub in ("images", "masks"):
            (folder / hospital / sub).mkdir(parents=True, exist_ok=True)
        for i in range(pairs):
            name = str(i + 1) if hospital == "cvc-clinicdb" else "".join(rng.choice(ID_CHARS, 25))
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            radius = rng.integers(size // 8, size // 4)
            polyp = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            mucosa = np.array([170, 80, 70]) + rng.normal(0, 12, (size, size, 3))
            mucosa[polyp] += (40, 30, 20)  # a lighter, raised polyp
            image = mucosa.clip(0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / hospital / "images" / f"{name}.jpg", quality=90)
            mask = Image.fromarray(polyp.astype(np.uint8) * 255).convert("RGB")
            mask.save(folder / hospital / "masks" / f"{name}.jpg", quality=75)
    (folder / "cvc-clinicdb" / "README.txt").write_text("Fake CVC-ClinicDB for tests.\n")
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
