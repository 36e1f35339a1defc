"""Generated phantom data for VQA: questions about a phantom, and their dataset. No files;
every example is a pure function of its seed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from omnifm.datasets.base import SPLITS, Split
from omnifm.datasets.phantom import PHANTOM_CLASSES, PHANTOM_MODALITIES, generate_phantoms
from omnifm.datasets.vqa_rad import VQADataset

__all__ = ["PHANTOM_ANSWERS", "phantom_qa", "phantom_records", "phantom_vqa"]

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


def phantom_records(
    labels: np.ndarray, masks: np.ndarray, modality: str, seed: int, split: Split, per_image: int
) -> list[dict[str, Any]]:
    """`per_image` QA records (``phantom_qa``) about each phantom of (seed, modality, split),
    given its labels and masks; image ``i`` is named ``str(i)``."""
    keys = (seed, PHANTOM_MODALITIES.index(modality), SPLITS.index(split), 1)
    records = []
    for i, (label, mask) in enumerate(zip(labels, masks, strict=True)):
        rng = np.random.default_rng([*keys, i])
        for q in range(per_image):
            qa = phantom_qa(int(label), mask, rng)
            records.append({**qa, "image_name": str(i), "qid": i * per_image + q})
    return records


def phantom_vqa(
    modality: str, size: int, seed: int, split: Split, count: int, per_image: int
) -> VQADataset:
    """`count` phantoms of (seed, modality, split) with `per_image` questions each, answered
    from ``PHANTOM_ANSWERS``."""
    images, labels, masks = generate_phantoms(modality, size, seed, split, np.arange(count))
    tensors = {str(i): torch.from_numpy(im).permute(2, 0, 1) for i, im in enumerate(images)}
    records = phantom_records(labels, masks, modality, seed, split, per_image)
    return VQADataset(records, tensors, PHANTOM_ANSWERS)
