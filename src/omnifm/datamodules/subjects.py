"""Segmentation volumes kept one folder per subject, as BraTS and FeTS ship them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnifm.datamodules.segmentation import SegmentationFolderDataModule
from omnifm.datasets.base import Split
from omnifm.datasets.splits import split_items

__all__ = ["SubjectFolderDataModule"]


class SubjectFolderDataModule(SegmentationFolderDataModule):
    """3D segmentation with one folder per subject below ``root``, each holding the image of
    one sequence and the label volume, e.g. BRATS 2013's ``brats_2013_pat0001_1/
    Flair_subtrMeanDivStd.nii.gz`` with ``OTMultiClass.nii.gz``. File names may contain
    ``{subject}`` (FeTS: ``{subject}_flair.nii.gz``, ``{subject}_seg.nii.gz``).

    A hospital's patients are ``subjects`` (folder names; all folders when ``null``); the
    train/val/test split is a seeded shuffle of them. Volumes are read and resized as by
    ``SegmentationFolderDataModule`` with ``spatial_dims: 3`` and label values as class
    indices (``threshold: null``); its other arguments (``size``, ``intensity_range``,
    ``augment``, fractions, ``cache``, ...) pass through.

    Args:
        root: the folder of subject folders.
        image: the image file in each subject folder.
        label: the label file in each subject folder.
        subjects: the subject folders of this source; ``null``: every folder in ``root``.
        modality: modality tag of this source (e.g. ``mri-flair``).
        num_classes: classes including background (BraTS: 5, labels 0-4).
        **kwargs: ``SegmentationFolderDataModule``'s other arguments.
    """

    def __init__(
        self,
        root: str = ".",
        image: str = "Flair_subtrMeanDivStd.nii.gz",
        label: str = "OTMultiClass.nii.gz",
        subjects: list[str] | None = None,
        modality: str = "mri",
        num_classes: int = 5,
        **kwargs: Any,
    ) -> None:
        kwargs.update(spatial_dims=3, threshold=None, in_channels=kwargs.get("in_channels", 1))
        super().__init__(root=root, modality=modality, num_classes=num_classes, **kwargs)
        self.image, self.label = image, label
        self.subjects = subjects

    def pairs(self, split: Split) -> list[tuple[Path, Path]]:
        """The (image, label) paths of `split`'s subjects; a missing folder or file is named."""
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"subject folder root {root} not found")
        names = self.subjects or sorted(p.name for p in root.iterdir() if p.is_dir())
        if not names:
            raise ValueError(f"no subject folders in {root}")
        pairs = []
        for name in names:
            files = [root / name / f.format(subject=name) for f in (self.image, self.label)]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"subject {name!r}: {', '.join(missing)} not found; check `subjects`, "
                    "`image` and `label`"
                )
            pairs.append((files[0], files[1]))
        return split_items(pairs, split, *self.fractions, self.seed)
