"""Generated phantom data: determinism, shapes per modality, masks, balance, distinct styles."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from omnifm.datamodules import PhantomDataModule
from omnifm.datasets.phantom import PHANTOM_CLASSES, PHANTOM_MODALITIES, generate_phantoms


def _high_frequency_share(images: np.ndarray) -> float:
    """Mean share of spectral energy outside the central low-frequency quarter."""
    grey = images.mean(axis=-1)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))) ** 2
    size = grey.shape[-1]
    low = power[:, size * 3 // 8 : size * 5 // 8, size * 3 // 8 : size * 5 // 8].sum(axis=(1, 2))
    return float(np.mean(1 - low / power.sum(axis=(1, 2))))


def test_same_seed_same_images_other_seed_other_images() -> None:
    first = generate_phantoms("ct", 16, seed=0, split="train", indices=np.arange(4))
    again = generate_phantoms("ct", 16, seed=0, split="train", indices=np.arange(4))
    other = generate_phantoms("ct", 16, seed=1, split="train", indices=np.arange(4))

    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    assert not np.allclose(first[0], other[0])


def test_an_example_regenerates_alone_and_splits_differ() -> None:
    batch, labels, masks = generate_phantoms("mri", 16, seed=3, split="val", indices=range(6))
    alone, label, mask = generate_phantoms("mri", 16, seed=3, split="val", indices=[4])
    train, _, _ = generate_phantoms("mri", 16, seed=3, split="train", indices=range(6))

    np.testing.assert_allclose(alone[0], batch[4], atol=1e-6)
    assert label[0] == labels[4]
    assert np.array_equal(mask[0], masks[4])
    assert not np.allclose(train, batch)


@pytest.mark.parametrize("modality", PHANTOM_MODALITIES)
def test_items_per_modality_have_shape_channels_range_and_binary_masks(modality: str) -> None:
    data = PhantomDataModule(modality, num_train=12, num_val=2, num_test=2, size=24)
    channels = 3 if modality == "pathology" else 1

    items = [data.dataset("train")[i] for i in range(12)]

    assert data.in_channels == channels and data.num_classes == len(PHANTOM_CLASSES)
    for item in items:
        assert set(item) == {"image", "label", "mask"}
        assert item["image"].shape == (channels, 24, 24) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
        assert item["label"].dtype == torch.long and item["label"].shape == ()
        assert item["mask"].dtype == torch.long and item["mask"].shape == (24, 24)
        assert set(item["mask"].unique().tolist()) == {0, 1}


def test_masks_never_empty_and_classes_roughly_uniform() -> None:
    _, labels, masks = generate_phantoms("ultrasound", 16, 0, "train", np.arange(400))

    assert masks.reshape(400, -1).sum(axis=1).min() > 0
    shares = np.bincount(labels, minlength=4) / len(labels)
    assert np.all(np.abs(shares - 0.25) < 0.07)


def test_modality_styles_differ_in_spectrum_and_intensity() -> None:
    images = {m: generate_phantoms(m, 32, 0, "train", np.arange(32))[0] for m in PHANTOM_MODALITIES}

    assert _high_frequency_share(images["ultrasound"]) > 2 * _high_frequency_share(images["mri"])
    assert _high_frequency_share(images["xray"]) < _high_frequency_share(images["ct"])
    assert images["pathology"].mean() > 0.6 > images["ct"].mean()
    pathology = images["pathology"].reshape(-1, 3).mean(axis=0)
    assert pathology[1] < pathology[0] and pathology[1] < pathology[2]  # pink/purple: low green


@pytest.mark.parametrize("modality", ["mri", "pathology"])
def test_generating_256_images_is_fast(modality: str) -> None:
    generate_phantoms(modality, 32, 0, "train", np.arange(8))
    seconds = []

    for _ in range(3):
        start = time.perf_counter()
        generate_phantoms(modality, 32, 0, "train", np.arange(256))
        seconds.append(time.perf_counter() - start)

    assert min(seconds) < 0.5


def test_labels_match_items_and_loaders_batch() -> None:
    data = PhantomDataModule("xray", num_train=10, num_val=4, num_test=6, size=16, batch_size=4)

    labels = data.labels("train")
    batch = next(iter(data.train_dataloader()))

    assert labels.tolist() == [int(data.dataset("train")[i]["label"]) for i in range(10)]
    assert batch["image"].shape == (4, 1, 16, 16) and batch["mask"].shape == (4, 16, 16)
    assert sum(len(b["label"]) for b in data.test_dataloader()) == 6
    assert data.dataset("val") is data.dataset("val")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modality": "pet"}, "unknown phantom modality 'pet'"),
        ({"size": 8}, "size must be >= 16"),
        ({"num_val": 0}, r"split sizes \(num_train, num_val, num_test\) must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomDataModule(**kwargs)


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        PhantomDataModule(size=16, num_train=2).dataset("dev")
