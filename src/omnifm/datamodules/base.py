"""The base class of one image source, and the dataset of in-memory arrays it often uses."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Literal, cast, get_args

import numpy as np
import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

TaskType = Literal[
    "multi-class", "binary", "multi-label", "segmentation", "super-resolution", "fusion"
]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
LUMA_601 = (0.299, 0.587, 0.114)


def check_split(split: str) -> Split:
    """Return `split` when it is one of train/val/test, else raise a ValueError."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    return cast(Split, split)


def reduce_labels(labels: np.ndarray) -> np.ndarray:
    """One int label per example: (N,) or (N, 1) as is; (N, K) multi-label rows to the index
    of their first positive label, or K when a row has none (e.g. "no finding")."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        positive = labels > 0
        return np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1])
    return labels.reshape(len(labels)).astype(np.int64)


def to_channels(image: Tensor, channels: int) -> Tensor:
    """A (C, *spatial) image with `channels` channels: grey repeated, or RGB to ITU-R 601 luma."""
    have = image.shape[0]
    if not can_convert(have, channels):
        raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")
    if have == channels:
        return image
    ones = [1] * (image.ndim - 1)  # 2D images and 3D volumes alike
    if have == 1:
        return image.repeat(channels, *ones)
    weights = torch.tensor(LUMA_601, dtype=image.dtype, device=image.device)
    return (image * weights.view(-1, *ones)).sum(0, keepdim=True)


def can_convert(have: int, channels: int) -> bool:
    """Whether `to_channels` converts `have` channels to `channels`: same, 1 -> N, 3 -> 1."""
    return have == channels or have == 1 or (have == 3 and channels == 1)


class ArrayDataset(Dataset):
    """Items `{"image", "label"[, "mask"]}` from arrays held in memory.

    images: (N, H, W) or (N, H, W, C), uint8 (scaled by 1/255) or float in [0, 1].
    labels: (N,) or (N, 1) class indices, or (N, K) multi-label 0/1 rows.
    masks: optional (N, H, W) integer segmentation masks.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        task_type: TaskType,
        masks: np.ndarray | None = None,
    ) -> None:
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {images.shape}")
        if len(labels) != len(images) or (masks is not None and len(masks) != len(images)):
            raise ValueError(
                f"images, labels and masks must have the same length, got {len(images)}, "
                f"{len(labels)} and {None if masks is None else len(masks)}"
            )
        self.images = images
        self.labels = labels
        self.task_type = task_type
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        label = self.labels[index]
        if self.task_type == "multi-label":
            target = torch.as_tensor(label, dtype=torch.float32).reshape(-1)
        else:
            target = torch.tensor(int(np.asarray(label).reshape(-1)[0]), dtype=torch.long)
        item = {"image": image.contiguous(), "label": target}
        if self.masks is not None:
            item["mask"] = torch.from_numpy(np.asarray(self.masks[index], dtype=np.int64))
        return item


class SourceDataModule(LightningDataModule, ABC):
    """One image source (a dataset file or a generator) with train/val/test splits."""

    num_classes: int
    in_channels: int
    task_type: TaskType
    modality: str

    def __init__(self, root: str = ".", batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}"
            )
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._datasets: dict[Split, Dataset] = {}

    @abstractmethod
    def _build(self, split: Split) -> Dataset:
        """Build the dataset of one split (called once per split)."""

    def dataset(self, split: Split) -> Dataset:
        """The dataset of `split`, built on first use and cached."""
        split = check_split(split)
        if split not in self._datasets:
            self._datasets[split] = self._build(split)
        return self._datasets[split]

    def labels(self, split: Split) -> np.ndarray:
        """One int label per example of `split` (multi-label: see `reduce_labels`)."""
        data = self.dataset(split)
        items = [data[i]["label"].numpy() for i in range(len(data))]
        if not items:
            return np.zeros(0, dtype=np.int64)
        return reduce_labels(np.stack([np.atleast_1d(x) for x in items]))

    def with_root(self, root: str) -> None:
        """Resolve a relative `self.root` against a parent `root`."""
        if not os.path.isabs(self.root):
            self.root = os.path.join(root, self.root)
            self._datasets.clear()

    def setup(self, stage: str | None = None) -> None:
        """Build the splits a Trainer stage needs."""
        needed: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for split in needed.get(stage, SPLITS):
            self.dataset(split)

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
