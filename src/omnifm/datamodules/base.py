"""The base class of one image source: its train/val/test datasets and their dataloaders."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import numpy as np
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from omnifm.datasets.array import reduce_labels
from omnifm.datasets.base import SPLITS, Split, TaskType, check_split

__all__ = ["SourceDataModule"]


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
