"""Generated phantom data for VQA (questions about a phantom) and for fusion (one phantom scene
rendered in two modality styles). No files; every example is a pure function of its seed."""

from __future__ import annotations

from typing import Any, Literal

import matplotlib
import numpy as np
import torch

from omnifm.datamodules.base import SPLITS, SourceDataModule, Split, TaskType
from omnifm.datamodules.fusion_pairs import PairDataset
from omnifm.datamodules.phantom import (
    PHANTOM_CLASSES,
    PHANTOM_MODALITIES,
    PhantomDataModule,
    PhantomModality,
    _blur,
    generate_phantoms,
    render_scenes,
)
from omnifm.datamodules.vqa_rad import VQADataset

__all__ = ["PHANTOM_ANSWERS", "PhantomFusionDataModule", "PhantomVQADataModule", "phantom_qa"]

PHANTOM_ANSWERS = ("yes", "no", *PHANTOM_CLASSES, "left", "right")
_QUESTION_KINDS = 4


def phantom_qa(label: int, mask: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """One question about a phantom with anatomy class ``label`` and structure ``mask``.

    Four kinds, drawn at random: "what structure is shown?" (open: the class), "is there a
    <class> in the image?" (closed; the true class half of the time), "is the structure on
    the left side?" (closed) and "which side is the structure on?" (open: left/right, by the
    mask's centre of mass in image coordinates).
    """
    kind = int(rng.integers(_QUESTION_KINDS))
    columns = np.nonzero(mask)[1]
    left = bool(columns.mean() < mask.shape[1] / 2) if columns.size else bool(rng.integers(2))
    if kind == 0:
        return {
            "question": "what structure is shown?",
            "answer": PHANTOM_CLASSES[label],
            "answer_type": "OPEN",
        }
    if kind == 1:
        asked = label if rng.random() < 0.5 else int(rng.integers(len(PHANTOM_CLASSES)))
        return {
            "question": f"is there a {PHANTOM_CLASSES[asked]} in the image?",
            "answer": "yes" if asked == label else "no",
            "answer_type": "CLOSED",
        }
    if kind == 2:
        return {
            "question": "is the structure on the left side?",
            "answer": "yes" if left else "no",
            "answer_type": "CLOSED",
        }
    return {
        "question": "which side is the structure on?",
        "answer": "left" if left else "right",
        "answer_type": "OPEN",
    }


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
        return self._records(split, generate_phantoms(*self._args(split))[1:])

    @property
    def questions(self) -> list[str]:
        """The training questions (for the default question tokenizer)."""
        return [r["question"] for r in self.records("train")]

    def _args(self, split: Split) -> tuple[Any, ...]:
        return self.modality, self.size, self.seed, split, np.arange(self.counts[split])

    def _records(self, split: Split, labels_masks: tuple[np.ndarray, np.ndarray]) -> list[dict]:
        labels, masks = labels_masks
        keys = (self.seed, PHANTOM_MODALITIES.index(self.modality), SPLITS.index(split), 1)
        records = []
        for i, (label, mask) in enumerate(zip(labels, masks, strict=True)):
            rng = np.random.default_rng([*keys, i])
            for q in range(self.per_image):
                qa = phantom_qa(int(label), mask, rng)
                records.append({**qa, "image_name": str(i), "qid": i * self.per_image + q})
        return records

    def _build(self, split: Split) -> VQADataset:
        images, labels, masks = generate_phantoms(*self._args(split))
        tensors = {str(i): torch.from_numpy(im).permute(2, 0, 1) for i, im in enumerate(images)}
        return VQADataset(self._records(split, (labels, masks)), tensors, PHANTOM_ANSWERS)

    def labels(self, split: Split) -> np.ndarray:
        return self.dataset(split).labels  # type: ignore[attr-defined]


FusionPartner = Literal["ct", "pet", "spect"]


def _pseudo_colour(ct: np.ndarray, mask: np.ndarray, partner: str) -> np.ndarray:
    """PET- or SPECT-like RGB (B, S, S, 3): blurred tracer uptake, high in the structure, low
    in the tissue (from the CT rendering), through matplotlib's ``hot`` (PET) or ``jet``
    (SPECT) colour map; SPECT is blurrier, as its resolution is lower."""
    sigma = ct.shape[-1] / (24 if partner == "pet" else 14)
    uptake = _blur(0.8 * mask.astype(np.float32) + 0.35 * ct, sigma)
    uptake = uptake / max(float(uptake.max()), 1e-6)
    cmap = matplotlib.colormaps["hot" if partner == "pet" else "jet"]
    rgb = cmap(np.clip(uptake, 0, 1))[..., :3]
    return np.where(uptake[..., None] > 0.05, rgb, 0.0).astype(np.float32)


class PhantomFusionDataModule(SourceDataModule):
    """Co-registered phantom pairs: one scene as MRI (``"image"``) and as CT, PET or SPECT
    (``"partner"``, RGB), the item layout of ``FusionPairsDataModule``. PET and SPECT are
    pseudo-colour renderings of the scene's structure and tissue (``_pseudo_colour``)."""

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
        if partner not in ("ct", "pet", "spect") or size < 41:
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
        n = self.counts[split]
        images, _, masks = render_scenes(["mri", "ct"], self.size, self.seed, split, range(n))
        ct = images["ct"][..., 0]
        if self.partner == "ct":
            partner = np.repeat(ct[..., None], 3, axis=-1)
        else:
            partner = _pseudo_colour(ct, masks, self.partner)
        first = (images["mri"][..., 0] * 255).round().astype(np.uint8)
        second = (partner * 255).round().astype(np.uint8)
        return PairDataset(first, second, [f"{split}-{i}" for i in range(n)])

    def labels(self, split: Split) -> np.ndarray:
        raise ValueError("phantom fusion pairs have no labels to partition by; use kind 'iid'")
