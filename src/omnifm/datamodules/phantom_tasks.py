"""Generated phantom data for VQA (questions about a phantom) and for fusion (one phantom scene
rendered in two modality styles) as image sources; ``omnifm.datasets.phantom_vqa`` and
``omnifm.datasets.phantom_fusion`` generate them. No files."""

from __future__ import annotations

from typing import Any

import numpy as np

from omnifm.datamodules.base import SourceDataModule
from omnifm.datamodules.phantom import PhantomDataModule
from omnifm.datasets.base import Split, TaskType
from omnifm.datasets.fusion_pairs import PairDataset
from omnifm.datasets.phantom import PhantomModality, generate_phantoms
from omnifm.datasets.phantom_fusion import FUSION_PARTNERS, FusionPartner, phantom_pairs
from omnifm.datasets.phantom_vqa import PHANTOM_ANSWERS, phantom_records, phantom_vqa
from omnifm.datasets.vqa_rad import VQADataset

__all__ = ["PhantomFusionDataModule", "PhantomVQADataModule"]


class PhantomVQADataModule(PhantomDataModule):
    """Questions about generated phantoms of one modality style (``phantom_qa``).

    ``questions_per_image`` questions per phantom; answers are ``PHANTOM_ANSWERS`` (class
    names, yes/no, left/right). Items are those of ``VQADataset``; the other arguments are
    ``PhantomDataModule``'s.
    """

    num_classes = len(PHANTOM_ANSWERS)

    def __init__(
        self,
        modality: PhantomModality = "ct",
        num_train: int = 128,
        num_val: int = 32,
        num_test: int = 32,
        questions_per_image: int = 3,
        size: int = 32,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        root: str = ".",
    ) -> None:
        super().__init__(
            modality, num_train, num_val, num_test, size, seed, batch_size, num_workers, root
        )
        if questions_per_image < 1:
            raise ValueError(f"questions_per_image must be >= 1, got {questions_per_image}")
        self.per_image = questions_per_image

    def records(self, split: Split) -> list[dict[str, Any]]:
        """The questions of ``split`` (without images)."""
        indices = np.arange(self.counts[split])
        _, labels, masks = generate_phantoms(self.modality, self.size, self.seed, split, indices)
        return phantom_records(labels, masks, self.modality, self.seed, split, self.per_image)

    @property
    def questions(self) -> list[str]:
        """The training questions (for the default question tokenizer)."""
        return [r["question"] for r in self.records("train")]

    def _build(self, split: Split) -> VQADataset:
        count = self.counts[split]
        return phantom_vqa(self.modality, self.size, self.seed, split, count, self.per_image)

    def labels(self, split: Split) -> np.ndarray:
        return self.dataset(split).labels  # type: ignore[attr-defined]


class PhantomFusionDataModule(SourceDataModule):
    """Co-registered phantom pairs: one scene as MRI (``"image"``) and as CT, PET or SPECT
    (``"partner"``, RGB), the item layout of ``FusionPairsDataModule``. PET and SPECT are
    pseudo-colour renderings of the scene's structure and tissue (``pseudo_colour``)."""

    num_classes = 0
    in_channels = 1
    task_type: TaskType = "fusion"

    def __init__(
        self,
        partner: FusionPartner = "ct",
        num_train: int = 64,
        num_val: int = 16,
        num_test: int = 16,
        size: int = 64,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        root: str = ".",
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if partner not in FUSION_PARTNERS or size < 41:
            raise ValueError(
                f"need partner 'ct', 'pet' or 'spect' and size >= 41 (VIF), got {partner!r} "
                f"and {size}"
            )
        if min(num_train, num_val, num_test) < 1:
            raise ValueError("phantom pair counts must be >= 1")
        self.partner = partner
        self.modality = partner
        self.size = size
        self.seed = seed
        self.counts: dict[Split, int] = {"train": num_train, "val": num_val, "test": num_test}

    def _build(self, split: Split) -> PairDataset:
        return phantom_pairs(self.partner, self.size, self.seed, split, self.counts[split])

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError("phantom fusion pairs have no labels to partition by; use kind 'iid'")
