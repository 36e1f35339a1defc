"""The dataset of images, labels and masks held in memory as arrays, and one label per item."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from omnifm.datasets.base import TaskType

__all__ = ["ArrayDataset", "reduce_labels"]


def reduce_labels(labels: np.ndarray) -> np.ndarray:
    """One int label per example: (N,) or (N, 1) as is; (N, K) multi-label rows to the index
    of their first positive label, or K when a row has none (e.g. "no finding")."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        positive = labels > 0
        return np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1])
    return labels.reshape(len(labels)).astype(np.int64)


class ArrayDataset(Dataset):
    """Items `{"image", "label"[, "mask"]}` from arrays held in memory.

    images: (N, H, W) or (N, H, W, C), uint8 (scaled by 1/255) or float in [0, 1]; with
        ``spatial_dims=3``, single-channel volumes (N, D, H, W), each item (1, D, H, W).
    labels: (N,) or (N, 1) class indices, or (N, K) multi-label 0/1 rows.
    masks: optional (N, H, W) integer segmentation masks.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        task_type: TaskType,
        masks: np.ndarray | None = None,
        spatial_dims: int = 2,
    ) -> None:
        if spatial_dims == 3 and images.ndim != 4:
            raise ValueError(f"volumes must be (N, D, H, W), got {images.shape}")
        if spatial_dims == 2 and images.ndim not in (3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {images.shape}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(labels) != len(images) or (masks is not None and len(masks) != len(images)):
            raise ValueError(
                f"images, labels and masks must have the same length, got {len(images)}, "
                f"{len(labels)} and {None if masks is None else len(masks)}"
            )
        self.images = images
        self.labels = labels
        self.task_type = task_type
        self.masks = masks
        self.spatial_dims = spatial_dims

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        channels_last = image.ndim == 3 and self.spatial_dims == 2
        image = image.permute(2, 0, 1) if channels_last else image.unsqueeze(0)
        label = self.labels[index]
        if self.task_type == "multi-label":
            target = torch.as_tensor(label, dtype=torch.float32).reshape(-1)
        else:
            target = torch.tensor(int(np.asarray(label).reshape(-1)[0]), dtype=torch.long)
        item = {"image": image.contiguous(), "label": target}
        if self.masks is not None:
            item["mask"] = torch.from_numpy(np.asarray(self.masks[index], dtype=np.int64))
        return item
