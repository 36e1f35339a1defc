"""SegmentationFolderDataModule: pairing by name, JPEG mask threshold, splits, NIfTI volumes,
bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnifm.datamodules import (
    ClientSource,
    FederatedDataModule,
    SegmentationFolderDataModule,
    pair_files,
)


def write_pairs(root: Path, n: int = 6, size: int = 24) -> Path:
    """`n` RGB JPEG images with lossy JPEG masks of a square (same file names)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[4 : 4 + 2 * (i + 2), 4 : 4 + 2 * (i + 2)] = 255
        Image.fromarray(image).save(root / "images" / f"case{i}.jpg")
        Image.fromarray(mask).convert("RGB").save(root / "masks" / f"case{i}.jpg", quality=60)
    return root


def source(root: Path, **kwargs) -> SegmentationFolderDataModule:
    defaults = {"size": 16, "val_fraction": 0.2, "test_fraction": 0.2, "augment": False}
    return SegmentationFolderDataModule(root=str(root), **{**defaults, **kwargs})


def test_pairs_are_thresholded_resized_and_split_by_a_seeded_shuffle(tmp_path: Path) -> None:
    data = source(write_pairs(tmp_path))

    names = {s: [p[0].name for p in data.pairs(s)] for s in ("train", "val", "test")}
    item = data.dataset("test")[0]

    assert sorted(n for part in names.values() for n in part) == [f"case{i}.jpg" for i in range(6)]
    assert [len(v) for v in names.values()] == [4, 1, 1]
    assert names == {s: [p[0].name for p in source(tmp_path).pairs(s)] for s in names}
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    assert item["mask"].shape == (16, 16) and item["mask"].dtype == torch.long
    assert set(item["mask"].unique().tolist()) == {0, 1}  # lossy JPEG grey values gone
    i = int(names["test"][0][4])
    side = round(2 * (i + 2) * 16 / 24)
    assert abs(int(item["mask"].sum()) - side * side) <= 2 * side  # the square, resized


def test_train_augmentation_follows_torch_seed(tmp_path: Path) -> None:
    data = source(write_pairs(tmp_path), augment=True).dataset("train")
    draws = []
    for seed in (1, 1, 2, 3, 4):
        torch.manual_seed(seed)
        draws.append(data[0]["mask"])
    assert torch.equal(draws[0], draws[1])
    assert any(not torch.equal(draws[0], d) for d in draws[2:])


def test_two_folders_as_two_clients(tmp_path: Path) -> None:
    sources = [
        ClientSource(name, source(write_pairs(tmp_path / name, n=10)), "endoscopy")
        for name in ("a", "b")
    ]
    data = FederatedDataModule(sources, in_channels=1, batch_size=4)
    batch = next(iter(data.client_datamodule("b").train_dataloader()))
    assert (data.num_classes, data.task_type) == (2, "segmentation")
    assert batch["image"].shape == (4, 1, 16, 16) and batch["mask"].shape == (4, 16, 16)


def test_nifti_volume_pairs_load_in_3d(tmp_path: Path) -> None:
    nibabel = pytest.importorskip("nibabel")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        volume = np.random.default_rng(i).normal(100, 20, (12, 12, 10)).astype(np.float32)
        mask = np.zeros((12, 12, 10), dtype=np.uint8)
        mask[2:8, 2:8, 2:6] = 1
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "images" / f"v{i}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / f"v{i}.nii.gz")

    data = source(
        tmp_path,
        spatial_dims=3,
        size=8,
        in_channels=1,
        threshold=0.5,
        val_fraction=0.3,
        test_fraction=0.3,
    )
    item = data.dataset("train")[0]

    assert item["image"].shape == (1, 8, 8, 8) and item["mask"].shape == (8, 8, 8)
    assert 0 <= float(item["image"].min()) < float(item["image"].max()) <= 1  # min-max scaled
    assert set(item["mask"].unique().tolist()) == {0, 1}


def write_dicom_series(folder: Path, volume: np.ndarray) -> None:
    """One CT DICOM file per slice of `volume` (H, W, D), uint16."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for z in range(volume.shape[-1]):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID = ds.StudyInstanceUID = series
        ds.Modality, ds.InstanceNumber = "CT", z + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = np.ascontiguousarray(volume[..., z], dtype=np.uint16).tobytes()
        ds.save_as(folder / f"slice{z}.dcm", enforce_file_format=True)


def test_dicom_series_folders_pair_by_folder_name(tmp_path: Path) -> None:
    for i in range(3):
        volume = np.full((8, 8, 4), 100 + 10 * i, dtype=np.uint16)
        volume[..., 2:] = 1000
        write_dicom_series(tmp_path / "images" / f"patient{i}", volume)
        write_dicom_series(tmp_path / "masks" / f"patient{i}", (volume == 1000).astype(np.uint16))

    data = source(
        tmp_path,
        spatial_dims=3,
        size=None,
        in_channels=1,
        threshold=0.5,
        val_fraction=0.3,
        test_fraction=0.3,
        intensity_range=(0, 1000),
    )
    item = data.dataset("test")[0]

    assert item["image"].shape == (1, 8, 8, 4)
    assert torch.equal(item["mask"], (item["image"][0] == 1).long())  # the bright half


def test_index_masks_need_threshold_null_and_enough_classes(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=3)
    with pytest.raises(ValueError, match="threshold: null"):
        source(root, num_classes=3)
    data = source(root, threshold=None, val_fraction=0.3, test_fraction=0.3)
    with pytest.raises(ValueError, match=r"masks/case.\.jpg has values outside \[0, 1\]"):
        data.dataset("train")[0]


def test_a_mask_without_image_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=3)
    (root / "images" / "case1.jpg").unlink()
    with pytest.raises(ValueError, match=r"mask .*case1\.jpg has no partner"):
        pair_files(root / "images", root / "masks")


def test_an_image_without_mask_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=3)
    (root / "masks" / "case2.jpg").unlink()
    with pytest.raises(ValueError, match=r"image .*case2\.jpg has no partner"):
        pair_files(root / "images", root / "masks")


def test_an_undecodable_image_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=6)
    for name in ("case0.jpg", "case1.jpg", "case2.jpg", "case3.jpg", "case4.jpg", "case5.jpg"):
        (root / "images" / name).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode .*images/case\d\.jpg"):
        source(root).dataset("train")


@pytest.mark.parametrize("missing", ["folder", "empty"])
def test_a_missing_or_empty_folder_is_named(tmp_path: Path, missing: str) -> None:
    (tmp_path / "masks").mkdir()
    if missing == "empty":
        (tmp_path / "images").mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match=r"image folder .*images"):
        source(tmp_path).dataset("train")


def test_subject_folders_pair_each_subjects_sequence_with_its_labels(
    fake_shared_data: Path, tmp_path: Path
) -> None:
    from omnifm.datamodules import SubjectFolderDataModule

    root = fake_shared_data / "brats2013"  # tests/data/brats2013: six fake subjects
    subjects = [f"brats_2013_pat000{n}_1" for n in (1, 2, 3)]
    data = SubjectFolderDataModule(
        str(root), "T1c_subtrMeanDivStd.nii.gz", subjects=subjects, size=[8, 8, 8],
        val_fraction=0.34, test_fraction=0.34, batch_size=1,
    )  # fmt: skip

    splits = {split: data.pairs(split) for split in ("train", "val", "test")}
    item = data.dataset("val")[0]

    assert sorted(p[0].parent.name for pairs in splits.values() for p in pairs) == subjects
    assert all(p[0].name.startswith("T1c") and p[1].name == "OTMultiClass.nii.gz"
               for pairs in splits.values() for p in pairs)  # fmt: skip
    assert item["image"].shape == (1, 8, 8, 8) and int(item["mask"].max()) <= 4
    assert (data.spatial_dims, data.num_classes, data.in_channels) == (3, 5, 1)
    with pytest.raises(FileNotFoundError, match="subject 'nobody'.*not found; check `subjects`"):
        SubjectFolderDataModule(str(root), subjects=["nobody"]).pairs("train")
    with pytest.raises(FileNotFoundError, match="subject folder root .* not found"):
        SubjectFolderDataModule(str(tmp_path / "none")).pairs("train")
