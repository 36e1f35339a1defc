"""SuperResolutionDataModule (BreaKHis-style folders) and the phantom dense sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnifm.datamodules import (
    ClientSource,
    FederatedDataModule,
    PhantomSegmentationDataModule,
    PhantomSuperResolutionDataModule,
    SuperResolutionDataModule,
    downsample,
    parse_breakhis,
)

NAMES = [
    "SOB_B_A-14-22549AB-40-001.png",
    "SOB_B_F-14-25197-100-001.png",
    "SOB_B_F-14-25197-40-023.png",
    "SOB_M_DC-14-2523-40-010.png",
    "SOB_M_LC-14-12204-40-001.png",
    "SOB_M_PC-14-9146-40-001.png",
]


def write_images(root: Path, names: list[str] = NAMES, size: tuple[int, int] = (40, 56)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)
    return root


def source(root: Path, **kwargs) -> SuperResolutionDataModule:
    defaults = {"patch_size": 16, "patches_per_image": 4, "eval_patches_per_image": 3}
    return SuperResolutionDataModule(root=str(root), **{**defaults, **kwargs})


def test_breakhis_names_are_parsed() -> None:
    fields = parse_breakhis("x/SOB_M_DC-14-2523-40-010.png")
    assert fields == {
        "class": "M",
        "type": "DC",
        "year": "14",
        "patient": "2523",
        "magnification": "40",
        "sequence": "010",
    }
    with pytest.raises(ValueError, match="kvasir.jpg is not a BreaKHis file name"):
        parse_breakhis("kvasir.jpg")


def test_downsampling_is_antialiased_bicubic() -> None:
    flat = torch.full((3, 16, 16), 0.25)
    stripes = torch.zeros(1, 16, 16)
    stripes[:, ::2] = 1.0  # finer than the x2 grid: must average out, not alias
    torch.testing.assert_close(downsample(flat, 2), torch.full((3, 8, 8), 0.25))
    assert downsample(stripes, 2).std() < 0.05 and downsample(stripes, 4).shape == (1, 4, 4)


def test_select_splits_by_file_and_makes_lr_hr_pairs(tmp_path: Path) -> None:
    data = source(write_images(tmp_path), select={"class": ["M"]}, scale=2)

    files = {s: [p.name for p in data.files(s)] for s in ("train", "val", "test")}
    item = data.dataset("val")[0]

    assert sorted(n for part in files.values() for n in part) == NAMES[3:]
    assert [len(v) for v in files.values()] == [1, 1, 1]
    assert item["image"].shape == (3, 8, 8) and item["target"].shape == (3, 16, 16)
    torch.testing.assert_close(item["image"], downsample(item["target"], 2))
    assert len(data.dataset("train")) == 4 and len(data.dataset("test")) == 3
    magnified = source(tmp_path, select={"magnification": [100, 40], "type": ["F"]})
    assert [p.name for p in magnified.files()] == [NAMES[1], NAMES[2]]


def test_train_patches_are_random_and_eval_patches_fixed(tmp_path: Path) -> None:
    data = source(write_images(tmp_path), scale=4)
    train, val = data.dataset("train"), data.dataset("val")
    torch.manual_seed(0)
    first = train[0]["target"]
    torch.manual_seed(0)
    assert torch.equal(first, train[0]["target"])  # seeded by torch's random state
    assert any(not torch.equal(first, train[0]["target"]) for _ in range(5))
    assert torch.equal(val[1]["target"], val[1]["target"])
    assert torch.equal(val[1]["target"], source(tmp_path, scale=4).dataset("val")[1]["target"])
    assert val[0]["image"].shape == (3, 4, 4)


def test_breakhis_clients_by_class(tmp_path: Path) -> None:
    root = write_images(tmp_path)
    clients = [
        ClientSource(name, source(root, select={"class": [c]}), "pathology")
        for name, c in (("benign", "B"), ("malignant", "M"))
    ]
    data = FederatedDataModule(clients, batch_size=2)
    batch = next(iter(data.client_datamodule("malignant").train_dataloader()))
    assert (data.task_type, data.num_classes, data.in_channels) == ("super-resolution", 0, 3)
    assert batch["image"].shape == (2, 3, 8, 8) and batch["target"].shape == (2, 3, 16, 16)


def test_a_patch_larger_than_an_image_is_named(tmp_path: Path) -> None:
    write_images(tmp_path)
    write_images(tmp_path, ["SOB_B_TA-14-3411F-40-001.png"], size=(12, 60))
    data = source(tmp_path, val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"patch_size 16 is larger than .*SOB_B_TA-14-3411F"):
        for split in ("train", "val", "test"):
            data.dataset(split)


def test_bad_files_and_folders_are_named(tmp_path: Path) -> None:
    root = write_images(tmp_path / "ok")
    for name in NAMES:
        (root / name).write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cannot decode .*SOB_"):
        source(root).dataset("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image folder .*empty has no"):
        source(tmp_path / "empty").dataset("train")
    with pytest.raises(FileNotFoundError, match="missing"):
        source(tmp_path / "missing").dataset("train")
    write_images(tmp_path / "named", ["a.png", "b.png", "c.png"])
    with pytest.raises(ValueError, match="a.png is not a BreaKHis file name"):
        source(tmp_path / "named", select={"class": ["B"]}).files()
    with pytest.raises(ValueError, match="multiple of it"):
        source(root, patch_size=18, scale=4)
    with pytest.raises(ValueError, match="unknown select fields"):
        source(root, select={"tumour": ["B"]})


def test_phantom_sources_for_segmentation_and_super_resolution() -> None:
    seg = PhantomSegmentationDataModule(modality="ct", size=16, num_train=4, num_val=2)
    item = seg.dataset("train")[0]
    assert (seg.num_classes, seg.task_type) == (2, "segmentation")
    assert item["mask"].shape == (16, 16) and set(item["mask"].unique().tolist()) <= {0, 1}

    sr = PhantomSuperResolutionDataModule(scale=4, modality="mri", size=32, num_train=4)
    pair = sr.dataset("train")[1]
    assert (sr.num_classes, sr.task_type) == (0, "super-resolution")
    assert pair["image"].shape == (1, 8, 8) and pair["target"].shape == (1, 32, 32)
    torch.testing.assert_close(pair["image"], downsample(pair["target"], 4))
    assert sr.labels("train").shape == (4,)
    with pytest.raises(ValueError, match="dividing the phantom size"):
        PhantomSuperResolutionDataModule(scale=8, size=36)
