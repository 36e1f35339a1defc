from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnifm.datamodules import (
    FusionPairsDataModule,
    PhantomFusionDataModule,
    generate_phantoms,
    render_scenes,
)
from omnifm.datasets import SPLITS


def fake_pairs(folder: Path, names: list[str], partner: str = "PET", size: int = 48) -> Path:
    """MRI (grey) and partner (RGB, or grey for CT) PNGs with the same names."""
    for sub in ("MRI", partner):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size), np.uint8)).save(folder / "MRI" / name)
        shape = (size, size) if partner == "CT" else (size, size, 3)
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(folder / partner / name)
    return folder


def test_pairs_load_matched_and_split_with_a_seed(tmp_path: Path) -> None:
    names = [f"{i:03d}.png" for i in range(20)]
    data = FusionPairsDataModule(str(fake_pairs(tmp_path, names)), size=48, seed=1)

    splits = {s: data.names(s) for s in SPLITS}
    item = data.dataset("train")[0]
    again = FusionPairsDataModule(str(tmp_path), size=48, seed=1)

    assert data.modality == "pet" and [len(splits[s]) for s in SPLITS] == [14, 3, 3]
    assert sorted(n for part in splits.values() for n in part) == names
    assert {s: again.names(s) for s in SPLITS} == splits
    assert item["image"].shape == (1, 48, 48) and item["partner"].shape == (3, 48, 48)
    assert item["partner"].min() >= 0 and item["partner"].max() <= 1
    expected = np.asarray(Image.open(tmp_path / "MRI" / item["name"]), np.float32) / 255
    torch.testing.assert_close(item["image"][0], torch.from_numpy(expected))


def test_grey_partner_is_repeated_to_rgb(tmp_path: Path) -> None:
    data = FusionPairsDataModule(
        str(fake_pairs(tmp_path, [f"{i}.png" for i in range(10)], "CT")), size=48
    )
    partner = data.dataset("train")[0]["partner"]
    assert torch.equal(partner[0], partner[1]) and torch.equal(partner[0], partner[2])


def test_mismatched_names_are_listed(tmp_path: Path) -> None:
    root = fake_pairs(tmp_path, ["a.png", "b.png", "c.png"])
    (root / "PET" / "b.png").rename(root / "PET" / "x.png")
    with pytest.raises(ValueError, match=r"only in MRI/: b\.png; only in PET/: x\.png"):
        FusionPairsDataModule(str(root), size=48).setup()


def test_mismatched_sizes_are_listed(tmp_path: Path) -> None:
    root = fake_pairs(tmp_path, ["a.png", "b.png", "c.png"])
    Image.new("RGB", (64, 64)).save(root / "PET" / "c.png")
    with pytest.raises(ValueError, match=r"c\.png 48x48 vs 64x64"):
        FusionPairsDataModule(str(root), size=48).setup()


def test_bad_layout_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fusion pair folder"):
        FusionPairsDataModule(str(tmp_path / "nope")).setup()
    root = fake_pairs(tmp_path / "p", ["a.png"])
    (root / "SPECT").mkdir()
    with pytest.raises(ValueError, match="set `second`"):
        FusionPairsDataModule(str(root)).setup()
    with pytest.raises(ValueError, match="iid"):
        FusionPairsDataModule(str(root), second="PET").labels("train")


def test_real_harvard_pairs(harvard_fusion_dir: Path) -> None:
    counts = {}
    for pair in ("CT-MRI", "PET-MRI", "SPECT-MRI"):
        data = FusionPairsDataModule(str(harvard_fusion_dir / pair), size=64)
        counts[data.modality] = sum(len(data.names(s)) for s in SPLITS)
    assert counts == {"ct": 184, "pet": 269, "spect": 357}


@pytest.mark.parametrize("partner", ["ct", "pet"])
def test_phantom_pairs_render_one_scene_in_two_styles(partner: str) -> None:
    data = PhantomFusionDataModule(partner, num_train=4, num_val=2, num_test=2, size=48)

    item = data.dataset("train")[1]
    images, labels, masks = render_scenes(["mri", "ct"], 48, 0, "train", range(4))
    mri, mri_labels, mri_masks = generate_phantoms("mri", 48, 0, "train", range(4))

    # one scene (the MRI phantom's) in both styles: same labels and masks
    np.testing.assert_array_equal(images["mri"], mri)
    np.testing.assert_array_equal(labels, mri_labels)
    np.testing.assert_array_equal(masks, mri_masks)
    assert item["image"].shape == (1, 48, 48) and item["partner"].shape == (3, 48, 48)
    expected = torch.from_numpy(np.round(mri[1, ..., 0] * 255) / 255).float()
    torch.testing.assert_close(item["image"][0], expected)
    if partner == "ct":
        ct = torch.from_numpy(np.round(images["ct"][1, ..., 0] * 255) / 255).float()
        torch.testing.assert_close(item["partner"][0], ct)
    else:  # pseudo-colour, hottest inside the structure
        assert not torch.equal(item["partner"][0], item["partner"][2])
        inside = torch.from_numpy(masks[1]).bool()
        assert item["partner"][0][inside].mean() > item["partner"][0][~inside].mean()
