"""Shared test helpers: the location of the real shared data, a generated stand-in, and one
random state per test."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, whatever ran before it: a test's random
    inputs do not change when tests are added, reordered or run alone."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fake_shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stand-in for `../shared/data`, generated once per session by tests/data in the
    real folders' layout and formats: runs every recipe where the real data is absent."""
    from .data import generate_all  # imported here: medmnist's import is slow

    return generate_all(tmp_path_factory.mktemp("shared_data"))


@pytest.fixture
def shared_data() -> Path:
    """The real data folder laid beside the clone (`../shared/data`); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: expected real data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def medmnist_dir(shared_data: Path) -> Path:
    """The MedMNIST files of the shared data; skip when absent."""
    folder = shared_data / "medmnist"
    if not folder.is_dir():
        pytest.skip(f"../shared/data/medmnist not found: expected MedMNIST files in {folder}")
    return folder


@pytest.fixture
def vqa_rad_dir(shared_data: Path) -> Path:
    """The VQA-RAD files of the shared data; skip when absent."""
    folder = shared_data / "vqa_rad"
    if not (folder / "trainset.json").is_file() or not (folder / "images").is_dir():
        pytest.skip(f"../shared/data/vqa_rad not found: need trainset.json and images/ in {folder}")
    return folder


@pytest.fixture
def harvard_fusion_dir(shared_data: Path) -> Path:
    """The Harvard atlas fusion pairs of the shared data; skip when absent."""
    folder = shared_data / "fusion" / "harvard"
    pairs = ("CT-MRI", "PET-MRI", "SPECT-MRI")
    if not all((folder / pair).is_dir() for pair in pairs):
        pytest.skip(f"../shared/data/fusion/harvard not found: need {pairs} in {folder}")
    return folder


@pytest.fixture
def brats_dir(shared_data: Path) -> Path:
    """The six BRATS 2013 subjects of the shared data; skip when absent."""
    folder = shared_data / "brats2013"
    if len(list(folder.glob("brats_2013_pat000*_1/OTMultiClass.nii.gz"))) < 6:
        pytest.skip(f"../shared/data/brats2013 not found: need six subject folders in {folder}")
    return folder


@pytest.fixture
def polyp_dir(shared_data: Path) -> Path:
    """Kvasir-SEG and CVC-ClinicDB of the shared data; skip when absent."""
    folder = shared_data / "polyp"
    if not all((folder / name / "images").is_dir() for name in ("kvasir-seg", "cvc-clinicdb")):
        pytest.skip(f"../shared/data/polyp not found: need kvasir-seg and cvc-clinicdb in {folder}")
    return folder


@pytest.fixture
def breakhis_dir(shared_data: Path) -> Path:
    """The BreaKHis PNG images of the shared data; skip when absent."""
    folder = shared_data / "breakhis"
    if not any(folder.glob("SOB_*.png")):
        pytest.skip(f"../shared/data/breakhis not found: expected BreaKHis PNG files in {folder}")
    return folder
