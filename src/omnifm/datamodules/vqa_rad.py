"""VQA-RAD (Lau et al., 2018) as one image source: radiology images with questions and answers
(read by ``omnifm.datasets.vqa_rad``), split by image and organ here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.base import Split, TaskType
from omnifm.datasets.splits import check_fractions
from omnifm.datasets.vqa_rad import (
    VQADataset,
    normalize_answer,
    read_json_list,
    read_records,
    read_vqa_image,
)

__all__ = ["VQARADDataModule"]

Organ = Literal["HEAD", "CHEST", "ABD"]
ORGANS: tuple[str, ...] = ("HEAD", "CHEST", "ABD")
_ORGAN_TAGS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}


class VQARADDataModule(SourceDataModule):
    """The VQA-RAD layout: ``trainset.json``, optional ``testset.json``, ``answer_all_list.json``
    and ``images/`` under ``root``.

    Records are normalised on reading: answers by ``normalize_answer``, ``answer_type`` by
    stripping and upper-casing (two records say ``"CLOSED "``). A question is closed when its
    ``answer_type`` is ``CLOSED`` (mostly yes/no).

    Splits are carved by image, so no image is in two splits: within each organ, the images
    of ``trainset.json`` are shuffled with ``seed``; the first ``val_fraction`` of them give
    the validation split and, when there is no ``testset.json``, the next ``test_fraction``
    the test split; the rest is training. With ``testset.json`` the test split is that file
    (the official split, whose images may also appear in training). The carving does not
    depend on ``organ``, so organ clients of one seed together hold exactly the full splits.

    The answer vocabulary (``answers``, ``num_classes`` of it) is ``answer_all_list.json``
    plus any training answer missing from it, for all organs alike (every client must share
    one answer classifier); a validation or test answer outside it gets label ``-1``.
    ``questions`` are the training questions of this source (its organ), from which
    ``VQATask``'s default tokenizer is built.

    Images (RGB JPEGs of various sizes) are read as grey, padded to a square with black and
    resized to ``size`` (aspect ratio kept), once, and kept in memory.

    Args:
        root: the VQA-RAD folder (relative paths resolve against the federated ``root``).
        organ: keep only ``HEAD``, ``CHEST`` or ``ABD`` records (one client per organ);
            ``None`` keeps all (split them into IID sites with a ``partition``).
        size: image side after resizing.
        val_fraction: share of each organ's images held out for validation.
        test_fraction: share held out for testing when ``testset.json`` is absent.
        seed: seed of the carving by image.
        modality: client tag; default ``head``, ``chest``, ``abdomen``, or ``radiology``.
    """

    in_channels = 1
    task_type: TaskType = "multi-class"

    def __init__(
        self,
        root: str = "vqa_rad",
        organ: Organ | None = None,
        size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        modality: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        if organ is not None and organ not in ORGANS:
            raise ValueError(f"unknown organ {organ!r}; use one of {list(ORGANS)} or null")
        check_fractions(val_fraction, test_fraction, needs_val=True)
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.organ = organ
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.modality = modality or (_ORGAN_TAGS[organ] if organ else "radiology")
        self._splits: dict[Split, list[dict[str, Any]]] | None = None
        self._answers: list[str] | None = None
        self._images: dict[str, Tensor] = {}

    # files --------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return Path(self.root)

    def with_root(self, root: str) -> None:
        super().with_root(root)
        self._splits, self._answers, self._images = None, None, {}

    # splits and vocabulary ---------------------------------------------------------------
    def _split_records(self) -> dict[Split, list[dict[str, Any]]]:
        """Every organ's records per split (cached)."""
        if self._splits is not None:
            return self._splits
        train = read_records(self.folder, "trainset.json")
        assert train is not None
        test = read_records(self.folder, "testset.json", required=False)
        carve_test = test is None
        rng = np.random.default_rng(self.seed)
        held: dict[str, Split] = {}
        for organ in sorted({r["image_organ"] for r in train}):
            images = sorted({r["image_name"] for r in train if r["image_organ"] == organ})
            order = [images[i] for i in rng.permutation(len(images))]
            n_val = max(1, round(self.val_fraction * len(images)))
            n_test = round(self.test_fraction * len(images)) if carve_test else 0
            held.update({name: "val" for name in order[:n_val]})
            held.update({name: "test" for name in order[n_val : n_val + n_test]})
        splits: dict[Split, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
        for r in train:
            splits[held.get(r["image_name"], "train")].append(r)
        if test is not None:
            splits["test"] = test
        self._splits = splits
        return splits

    @property
    def answers(self) -> list[str]:
        """The answer vocabulary: ``answer_all_list.json`` then missing training answers."""
        if self._answers is None:
            raw = read_json_list(self.folder, "answer_all_list.json") or []
            listed = dict.fromkeys(normalize_answer(a) for a in raw)
            train = {r["answer"] for r in self._split_records()["train"]}
            self._answers = [*listed, *sorted(train - set(listed))]
        return self._answers

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.answers)

    def records(self, split: Split) -> list[dict[str, Any]]:
        """The QA records of ``split`` for this source's organ."""
        return [
            r
            for r in self._split_records()[split]
            if self.organ is None or r["image_organ"] == self.organ
        ]

    @property
    def questions(self) -> list[str]:
        """The training questions of this source (for the default question tokenizer)."""
        return [r["question"] for r in self.records("train")]

    def labels(self, split: Split) -> np.ndarray:
        """Answer index per record (``-1``: unknown answer)."""
        return self.dataset(split).labels  # type: ignore[attr-defined]

    # datasets ------------------------------------------------------------------------------
    def _build(self, split: Split) -> VQADataset:
        records = self.records(split)
        for name in sorted({r["image_name"] for r in records} - set(self._images)):
            self._images[name] = read_vqa_image(self.folder / "images" / name, self.size)
        return VQADataset(records, self._images, self.answers)
