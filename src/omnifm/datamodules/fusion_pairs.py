"""Co-registered image pairs for multimodal fusion (e.g. the Harvard Whole Brain Atlas) as one
image source, read by ``omnifm.datasets.fusion_pairs``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.base import SPLITS, Split, TaskType
from omnifm.datasets.fusion_pairs import PairDataset, pair_folders, pair_names, read_resized
from omnifm.datasets.splits import check_fractions, split_items

__all__ = ["FusionPairsDataModule"]


class FusionPairsDataModule(SourceDataModule):
    """Pairs of co-registered images in two sub-folders of ``root``, matched by file name.

    Layout: ``root/<first>/x.png`` with ``root/<second>/x.png``, as in
    ``fusion/harvard/PET-MRI/{MRI,PET}``. Items: ``"image"``, the ``first`` image (the
    structural MRI) as grey ``(1, S, S)``; ``"partner"``, the ``second`` image (CT, PET or
    SPECT) as RGB ``(3, S, S)``: pseudo-colour PET/SPECT as they are, grey CT repeated, so
    ``FusionTask`` fuses every pair in YCbCr and a grey partner gives a grey result.

    Every name must be in both folders and every pair must have one size; otherwise one
    error lists the offending names. Pairs are split at random (``seed``) into train, val
    and test by name; note that neighbouring slices of one brain may then fall into
    different splits. Images are resized to ``size`` (bicubic) once and kept in memory.

    Args:
        root: the pair folder (relative paths resolve against the federated ``root``).
        first: sub-folder of the structural images.
        second: sub-folder of the partner images; ``None``: the only other sub-folder.
        size: image side after resizing (at least 41, for VIF).
        val_fraction: share of pairs for validation.
        test_fraction: share of pairs for testing.
        seed: seed of the split.
        modality: client tag; default the ``second`` folder's name in lower case.
    """

    num_classes = 0
    in_channels = 1
    task_type: TaskType = "fusion"

    def __init__(
        self,
        root: str = "fusion/harvard/PET-MRI",
        first: str = "MRI",
        second: str | None = None,
        size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        modality: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if size < 41:
            raise ValueError(f"size must be >= 41 (VIF's smallest image), got {size}")
        check_fractions(val_fraction, test_fraction, needs_val=True, needs_test=True)
        self.first = first
        self.second = second
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self._modality = modality
        self._names: dict[Split, list[str]] | None = None

    @property
    def modality(self) -> str:  # type: ignore[override]
        return self._modality or self.folders()[1].name.lower()

    def with_root(self, root: str) -> None:
        super().with_root(root)
        self._names = None

    def folders(self) -> tuple[Path, Path]:
        """The ``first`` and ``second`` folders."""
        return pair_folders(Path(self.root), self.first, self.second)

    def pair_names(self) -> list[str]:
        """File names present in both folders with one size; raises listing any that are not."""
        return pair_names(*self.folders())

    def names(self, split: Split) -> list[str]:
        """The pair names of ``split``."""
        if self._names is None:
            names, fractions = self.pair_names(), (self.val_fraction, self.test_fraction)
            self._names = {s: split_items(names, s, *fractions, self.seed) for s in SPLITS}
        return self._names[split]

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError(
            "fusion pairs have no labels to partition by; use partition kind 'iid' (or one "
            "client per folder)"
        )

    def _build(self, split: Split) -> PairDataset:
        a, b = self.folders()
        names = self.names(split)
        if not names:
            return PairDataset(np.zeros(0), np.zeros(0), names)
        first = np.stack([read_resized(a / n, "L", self.size) for n in names])
        second = np.stack([read_resized(b / n, "RGB", self.size) for n in names])
        return PairDataset(first, second, names)
