"""One client's share of a source split: a subset with its channels and label range."""

from __future__ import annotations

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datasets.errors import naming
from omnifm.functional import to_channels

__all__ = ["ClientSubset"]


class ClientSubset(Dataset):
    """One client's examples of a source split: images converted to `in_channels`, single
    labels shifted by `label_offset`; a failed read names `client`."""

    def __init__(
        self,
        dataset: Dataset,
        indices: np.ndarray,
        in_channels: int,
        label_offset: int = 0,
        client: str = "",
    ) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.in_channels = in_channels
        self.label_offset = label_offset
        self.client = client

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        with naming(f"client {self.client!r}"):
            item = dict(self.dataset[int(self.indices[index])])
        item["image"] = to_channels(item["image"], self.in_channels)
        if self.label_offset:
            item["label"] = item["label"] + self.label_offset
        return item
