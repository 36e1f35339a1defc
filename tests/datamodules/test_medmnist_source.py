"""MedMNIST sources: the real shared files, fake files for the other layouts, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnifm.datamodules.medmnist import MedMNISTDataModule

REAL = {
    # flag: (train, val, test), channels, task type, classes, modality
    "breastmnist": ((546, 78, 156), 1, "binary", 2, "ultrasound"),
    "retinamnist": ((1080, 120, 400), 3, "multi-class", 5, "fundus"),
    "pneumoniamnist": ((3882, 524, 624), 1, "binary", 2, "x-ray"),
}


def _fake_npz(folder: Path, name: str, channels: int, labels: int, size: int = 28) -> None:
    """A tiny file in the official MedMNIST layout: 6/2/3 examples."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        shape = (n, size, size) if channels == 1 else (n, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, labels), dtype=np.uint8)
    np.savez(folder / name, **arrays)


@pytest.mark.parametrize("flag", sorted(REAL))
def test_real_files_load_with_counts_channels_and_labels(flag: str, medmnist_dir: Path) -> None:
    counts, channels, task_type, classes, modality = REAL[flag]
    if not (medmnist_dir / f"{flag}.npz").is_file():
        pytest.skip(f"../shared/data/medmnist/{flag}.npz not found")
    data = MedMNISTDataModule(flag, root=str(medmnist_dir), batch_size=8)

    sizes = tuple(len(data.dataset(split)) for split in ("train", "val", "test"))
    item = data.dataset("val")[0]
    batch = next(iter(data.train_dataloader()))
    labels = data.labels("test")

    assert sizes == counts
    assert (data.in_channels, data.task_type, data.num_classes) == (channels, task_type, classes)
    assert data.modality == modality
    assert item["image"].shape == (channels, 28, 28) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["image"].max() > 0.3
    assert item["label"].dtype == torch.long and item["label"].shape == ()
    assert batch["image"].shape == (8, channels, 28, 28)
    assert labels.shape == (counts[2],) and set(np.unique(labels)) == set(range(classes))


@pytest.mark.parametrize("size", [28, 64])
def test_real_3d_files_give_single_channel_volumes(size: int, shared_data: Path) -> None:
    folder = shared_data / "medmnist3d"
    name = "adrenalmnist3d.npz" if size == 28 else f"adrenalmnist3d_{size}.npz"
    if not (folder / name).is_file():
        pytest.skip(f"../shared/data/medmnist3d/{name} not found")
    data = MedMNISTDataModule("adrenalmnist3d", root=str(folder), size=size, batch_size=4)

    sizes = tuple(len(data.dataset(split)) for split in ("train", "val", "test"))
    batch = next(iter(data.val_dataloader()))

    assert sizes == (1188, 98, 298)
    assert (data.spatial_dims, data.in_channels, data.task_type) == (3, 1, "binary")
    assert data.modality == "ct"
    assert batch["image"].shape == (4, 1, size, size, size) and batch["image"].max() <= 1.0
    assert set(np.unique(data.labels("test"))) == {0, 1}


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    data = MedMNISTDataModule("breastmnist", root=str(tmp_path), size=64)

    with pytest.raises(FileNotFoundError) as error:
        data.dataset("train")

    assert str(tmp_path / "breastmnist_64.npz") in str(error.value)
    assert "download: true" in str(error.value)


def test_multi_label_files_give_float_vectors(tmp_path: Path) -> None:
    _fake_npz(tmp_path, "chestmnist.npz", channels=1, labels=14)
    data = MedMNISTDataModule("chestmnist", root=str(tmp_path))

    item = data.dataset("train")[0]
    raw = np.load(tmp_path / "chestmnist.npz")["train_labels"]

    assert data.task_type == "multi-label" and data.num_classes == 14
    assert item["label"].dtype == torch.float32 and item["label"].shape == (14,)
    assert torch.equal(item["label"], torch.from_numpy(raw[0].astype(np.float32)))
    expected = [row.argmax() if row.any() else 14 for row in raw]
    assert data.labels("train").tolist() == expected


def test_larger_sizes_read_their_own_file_and_rgb_is_channels_first(tmp_path: Path) -> None:
    _fake_npz(tmp_path, "pathmnist_64.npz", channels=3, labels=1, size=64)
    data = MedMNISTDataModule("pathmnist", root=str(tmp_path), size=64, modality="he")

    item = data.dataset("test")[2]
    raw = np.load(tmp_path / "pathmnist_64.npz")["test_images"][2]

    assert data.modality == "he" and data.in_channels == 3
    assert torch.allclose(item["image"], torch.from_numpy(raw).permute(2, 0, 1).float() / 255)


def test_relative_root_resolves_against_a_parent(tmp_path: Path) -> None:
    (tmp_path / "medmnist").mkdir()
    _fake_npz(tmp_path / "medmnist", "breastmnist.npz", channels=1, labels=1)
    data = MedMNISTDataModule("breastmnist", root="medmnist")

    data.with_root(str(tmp_path))

    assert data.path == str(tmp_path / "medmnist" / "breastmnist.npz")
    assert len(data.dataset("train")) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flag": "mnist"}, "unknown MedMNIST flag 'mnist'; use one of .*'breastmnist'"),
        ({"flag": "organmnist3dd"}, "unknown MedMNIST flag 'organmnist3dd'.*'adrenalmnist3d'"),
        ({"flag": "breastmnist", "size": 32}, "size 32 is not available"),
        ({"flag": "adrenalmnist3d", "size": 128}, "size 128 is not available .* 64"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MedMNISTDataModule(**kwargs)


def test_a_truncated_file_names_the_file_the_client_and_the_fix(tmp_path: Path) -> None:
    # Prepare: two clients of one file cut short by a failed copy, and one good file
    from omnifm.datamodules import ClientSource, FederatedDataModule, Partition

    _fake_npz(tmp_path, "breastmnist.npz", channels=1, labels=1)
    _fake_npz(tmp_path, "pneumoniamnist.npz", channels=1, labels=1)
    path = tmp_path / "breastmnist.npz"
    path.write_bytes(path.read_bytes()[:200])
    before = path.read_bytes()
    sources = [
        ClientSource(
            "breast", MedMNISTDataModule("breastmnist"), partition=Partition("iid", sites=2)
        ),
        ClientSource("pneumonia", MedMNISTDataModule("pneumoniamnist")),
    ]
    data = FederatedDataModule(sources, root=str(tmp_path))
    # Execute
    with pytest.raises(ValueError) as error:
        data.setup()
    # Assert: what (a damaged file), where (the file, the clients), how to fix it
    message = str(error.value)
    assert message.startswith("clients ['breast-0', 'breast-1'] (source 'breast'): ")
    assert f"cannot read MedMNIST file '{tmp_path}" in message and "breastmnist.npz'" in message
    assert "BadZipFile" in message
    assert "damaged or incomplete: copy breastmnist.npz there again" in message
    assert path.read_bytes() == before  # nothing written over it
