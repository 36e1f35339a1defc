"""The one split-fraction check, and the two data levels: datasets never import datamodules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omnifm.datasets import check_fractions, split_items


@pytest.mark.parametrize(
    ("val", "test", "needs"),
    [(0.6, 0.5, {}), (-0.1, 0.2, {}), (1.0, 0.0, {}), (0.0, 0.2, {"needs_val": True})],
)
def test_bad_fractions_raise_one_error_naming_both(val: float, test: float, needs: dict) -> None:
    with pytest.raises(ValueError, match=r"val_fraction .* test_fraction .* leaving the rest"):
        check_fractions(val, test, **needs)


def test_good_fractions_pass_and_split_items_checks_them() -> None:
    check_fractions(0.0, 0.0)
    check_fractions(0.1, 0.2, needs_val=True, needs_test=True)
    parts = [split_items(range(10), s, 0.2, 0.3, 0) for s in ("test", "val", "train")]
    assert [len(p) for p in parts] == [3, 2, 5]
    assert sorted(i for p in parts for i in p) == list(range(10))
    with pytest.raises(ValueError, match="val_fraction=0.5 and test_fraction=0.5"):
        split_items(range(10), "train", 0.5, 0.5, 0)


def test_datasets_import_no_lightning_layer() -> None:
    code = (
        "import sys, omnifm.datasets; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('omnifm.')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['datasets', 'functional']"
