"""Fake BRATS 2013 subjects in the layout of ``../shared/data/brats2013`` (as the DeepMedic
examples ship it): ``brats2013/brats_2013_pat000N_1/`` for N = 1..6, each with
``Flair_subtrMeanDivStd.nii.gz`` and ``T1c_subtrMeanDivStd.nii.gz`` (float32, z-scored inside
the brain), ``OTMultiClass.nii.gz`` (labels 0-4 as float32), ``brainmask.nii.gz`` (float64)
and the licence text. 24x24x16 volumes (the real ones are 240x240x155): a brain ellipsoid
holding a tumour of nested shells, oedema, non-enhancing, enhancing ring and necrosis.

    python tests/data/brats2013/data.py OUT  # writes OUT/brats2013/
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel
import numpy as np

SHAPE = (24, 24, 16)


def generate(root: Path, seed: int = 0) -> Path:
    """Write ``root/brats2013/`` with six fake subjects; return the folder."""
    folder = Path(root) / "brats2013"
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    centre = (np.array(SHAPE) / 2)[:, None, None, None]
    brain = (((grid - centre) / (centre * 0.9)) ** 2).sum(0) < 1
    for n in range(1, 7):
        subject = folder / f"brats_2013_pat000{n}_1"
        subject.mkdir(parents=True, exist_ok=True)
        spot = centre + rng.uniform(-3, 3, (3, 1, 1, 1))
        r = np.sqrt(((grid - spot) ** 2).sum(0))
        labels = np.select([r < 1.5, r < 2.5, r < 3.5, r < 5], [1, 4, 3, 2], 0) * brain
        volumes = {"OTMultiClass": labels.astype(np.float32), "brainmask": brain.astype(np.float64)}
        for name, contrast in (("Flair", [0, 1, 3, 2, 1]), ("T1c", [0, -1, 1, 0, 3])):
            image = np.where(brain, rng.normal(0, 0.3, SHAPE) + np.take(contrast, labels), -3.6)
            volumes[f"{name}_subtrMeanDivStd"] = image.astype(np.float32)
        for name, volume in volumes.items():
            nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), subject / f"{name}.nii.gz")
        (subject / "License_CC_BY_NC_SA_3.0.txt").write_text("fake data: no licence needed\n")
    return folder


if __name__ == "__main__":
    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
