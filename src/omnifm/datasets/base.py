"""What every dataset shares: the task types an item serves and the train/val/test split names."""

from __future__ import annotations

from typing import Literal, cast, get_args

__all__ = ["SPLITS", "Split", "TaskType", "check_split"]

TaskType = Literal[
    "multi-class", "binary", "multi-label", "segmentation", "super-resolution", "fusion"
]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)


def check_split(split: str) -> Split:
    """Return `split` when it is one of train/val/test, else raise a ValueError."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    return cast(Split, split)
