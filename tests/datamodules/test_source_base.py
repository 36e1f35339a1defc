"""The source base class and its helpers: item layout, label reduction, channels, roots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets import ArrayDataset, Split, reduce_labels
from omnifm.functional.image import LUMA_601, to_channels


class _MultiLabelSource(SourceDataModule):
    """Three 4x4 RGB examples per split with 3 labels each; counts builds."""

    num_classes = 3
    in_channels = 3
    task_type = "multi-label"
    modality = "toy"

    def __init__(self, root: str = ".") -> None:
        super().__init__(root=root, batch_size=2)
        self.built: list[Split] = []

    def _build(self, split: Split) -> ArrayDataset:
        self.built.append(split)
        images = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
        labels = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]])
        return ArrayDataset(images, labels, "multi-label")


def test_reduce_labels_single_and_multi_label() -> None:
    assert reduce_labels(np.array([[2], [0], [1]])).tolist() == [2, 0, 1]
    assert reduce_labels(np.array([3, 1])).tolist() == [3, 1]
    assert reduce_labels(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]])).tolist() == [1, 3, 0]


def test_array_dataset_items_are_channels_first_floats() -> None:
    grey = ArrayDataset(np.full((2, 3, 5), 255, np.uint8), np.array([[1], [0]]), "binary")
    floats = np.random.default_rng(0).random((2, 3, 5, 3)).astype(np.float32)
    rgb = ArrayDataset(floats, np.array([0, 2]), "multi-class", masks=np.ones((2, 3, 5)))

    grey_item, rgb_item = grey[0], rgb[1]

    assert grey_item["image"].shape == (1, 3, 5) and float(grey_item["image"].max()) == 1.0
    assert grey_item["label"].dtype == torch.long and int(grey_item["label"]) == 1
    assert torch.equal(rgb_item["image"], torch.from_numpy(floats[1]).permute(2, 0, 1))
    assert rgb_item["mask"].dtype == torch.long and rgb_item["mask"].shape == (3, 5)


def test_array_dataset_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length, got 2, 3"):
        ArrayDataset(np.zeros((2, 4, 4)), np.zeros(3), "binary")


def test_to_channels_repeats_grey_and_takes_luma_of_rgb() -> None:
    grey = torch.rand(1, 4, 4)
    rgb = torch.rand(3, 4, 4)

    assert torch.equal(to_channels(grey, 3), grey.repeat(3, 1, 1))
    luma = to_channels(rgb, 1)
    expected = sum(w * rgb[c] for c, w in enumerate(LUMA_601))
    assert luma.shape == (1, 4, 4) and torch.allclose(luma[0], expected)
    assert to_channels(rgb, 3) is rgb
    with pytest.raises(ValueError, match="cannot convert a 3-channel image to 4 channels"):
        to_channels(rgb, 4)


def test_generic_labels_dataset_cache_and_stage_setup() -> None:
    source = _MultiLabelSource()

    source.setup("test")
    labels = source.labels("train")
    source.dataset("train")
    batch = next(iter(source.train_dataloader()))

    assert source.built == ["test", "train"]
    assert labels.tolist() == [1, 3, 0]
    assert batch["label"].shape == (2, 3) and batch["label"].dtype == torch.float32


def test_with_root_joins_relative_roots_and_keeps_absolute_ones() -> None:
    relative, absolute = _MultiLabelSource("data"), _MultiLabelSource("/abs/data")

    relative.with_root("/parent")
    absolute.with_root("/parent")

    assert relative.root == "/parent/data"
    assert absolute.root == "/abs/data"
