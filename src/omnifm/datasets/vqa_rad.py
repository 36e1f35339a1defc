"""VQA-RAD (Lau et al., 2018): radiology images with questions and answers. The dataset of QA
records, and the readers of the VQA-RAD files (JSON record lists, images)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datasets.readers import open_image

__all__ = [
    "RECORD_FIELDS",
    "VQADataset",
    "normalize_answer",
    "read_json_list",
    "read_records",
    "read_vqa_image",
]

RECORD_FIELDS = ("image_name", "image_organ", "answer", "answer_type", "question")


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


def read_json_list(folder: Path, name: str, required: bool = True) -> list[Any] | None:
    """The JSON list in ``folder / name``; ``None`` when it is absent and not `required`."""
    path = folder / name
    if not path.is_file():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"VQA-RAD folder {folder} not found; it needs trainset.json, "
                "answer_all_list.json and images/ (set the data root, e.g. ../shared/data)"
            )
        if required:
            raise FileNotFoundError(f"{path} not found; VQA-RAD needs {name} in {folder}")
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list, got {type(data).__name__}")
    return data


def read_records(folder: Path, name: str, required: bool = True) -> list[dict[str, Any]] | None:
    """The QA records of ``folder / name``, normalised: answers by ``normalize_answer``,
    ``answer_type`` and ``image_organ`` stripped and upper-cased (two records say
    ``"CLOSED "``); ``None`` when the file is absent and not `required`."""
    raw = read_json_list(folder, name, required)
    if raw is None:
        return None
    records = []
    for i, r in enumerate(raw):
        missing = [f for f in RECORD_FIELDS if not isinstance(r, dict) or f not in r]
        if missing:
            raise ValueError(f"{folder / name} record {i} lacks fields {missing}")
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


def read_vqa_image(path: Path, size: int) -> Tensor:
    """The image at `path` as grey float ``(1, size, size)`` in [0, 1]: padded to a square
    with black and resized (aspect ratio kept)."""
    if not path.is_file():
        raise FileNotFoundError(f"image {path} named by a VQA-RAD record is missing")
    with open_image(path) as img:
        img.draft("L", (size, size))  # JPEG: decode at a reduced scale
        grey = ImageOps.pad(img.convert("L"), (size, size), color=0)
    return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]
