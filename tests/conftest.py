"""Shared test helpers: the location of the real shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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
