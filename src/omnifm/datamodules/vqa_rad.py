"""VQA-RAD (Lau et al., 2018): radiology images with questions and answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datamodules.base import SourceDataModule, Split, TaskType

__all__ = ["VQADataset", "VQARADDataModule", "normalize_answer"]

Organ = Literal["HEAD", "CHEST", "ABD"]
ORGANS: tuple[str, ...] = ("HEAD", "CHEST", "ABD")
_ORGAN_TAGS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}
_FIELDS = ("image_name", "image_organ", "answer", "answer_type", "question")


def normalize_answer(answer: Any) -> str:
    """Lower case, single spaces, no trailing full stop: ``" Right  Lung."`` -> ``"right lung"``.

    Numbers (some records store ``4`` rather than ``"4"``) become their text.
    """
    return " ".join(str(answer).lower().split()).rstrip(".").strip()


class VQADataset(Dataset):
    """Items ``{"image" (1, S, S), "label", "question", "closed", "qid"}`` of QA records.

    ``label`` is the answer's index in ``answers``, or ``-1`` for an answer outside it (an
    unknown answer: counted as wrong by ``AnswerAccuracy``). ``images`` maps image names to
    loaded tensors, shared between splits.
    """

    def __init__(
        self, records: list[dict[str, Any]], images: dict[str, Tensor], answers: Sequence[str]
    ) -> None:
        index = {a: i for i, a in enumerate(answers)}
        self.records = records
        self.images = images
        self.labels = np.array([index.get(r["answer"], -1) for r in records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        return {
            "image": self.images[r["image_name"]],
            "label": torch.tensor(self.labels[i]),
            "question": r["question"],
            "closed": torch.tensor(r["answer_type"] == "CLOSED"),
            "qid": torch.tensor(int(r.get("qid", i))),
        }


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
        if not (
            0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                "need 0 < val_fraction < 1, 0 <= test_fraction < 1 and their sum below 1, got "
                f"{val_fraction} and {test_fraction}"
            )
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

    def _read(self, name: str, required: bool = True) -> list[Any] | None:
        path = self.folder / name
        if not path.is_file():
            if not self.folder.is_dir():
                raise FileNotFoundError(
                    f"VQA-RAD folder {self.folder} not found; it needs trainset.json, "
                    "answer_all_list.json and images/ (set the data root, e.g. ../shared/data)"
                )
            if required:
                raise FileNotFoundError(f"{path} not found; VQA-RAD needs {name} in {self.folder}")
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list, got {type(data).__name__}")
        return data

    def _records(self, name: str, required: bool = True) -> list[dict[str, Any]] | None:
        raw = self._read(name, required)
        if raw is None:
            return None
        records = []
        for i, r in enumerate(raw):
            missing = [f for f in _FIELDS if not isinstance(r, dict) or f not in r]
            if missing:
                raise ValueError(f"{self.folder / name} record {i} lacks fields {missing}")
            answer_type = str(r["answer_type"]).strip().upper()
            organ = str(r["image_organ"]).strip().upper()
            records.append(
                {
                    **r,
                    "answer": normalize_answer(r["answer"]),
                    "answer_type": answer_type,
                    "image_organ": organ,
                }
            )
        return records

    # splits and vocabulary ---------------------------------------------------------------
    def _split_records(self) -> dict[Split, list[dict[str, Any]]]:
        """Every organ's records per split (cached)."""
        if self._splits is not None:
            return self._splits
        train = self._records("trainset.json")
        assert train is not None
        test = self._records("testset.json", required=False)
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
            listed = dict.fromkeys(normalize_answer(a) for a in self._read("answer_all_list.json"))
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

    # images --------------------------------------------------------------------------------
    def _load_image(self, name: str) -> Tensor:
        path = self.folder / "images" / name
        if not path.is_file():
            raise FileNotFoundError(f"image {path} named by a VQA-RAD record is missing")
        try:
            with Image.open(path) as img:
                img.draft("L", (self.size, self.size))  # JPEG: decode at a reduced scale
                grey = ImageOps.pad(img.convert("L"), (self.size, self.size), color=0)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
        return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]

    def _build(self, split: Split) -> VQADataset:
        records = self.records(split)
        for name in sorted({r["image_name"] for r in records} - set(self._images)):
            self._images[name] = self._load_image(name)
        return VQADataset(records, self._images, self.answers)
