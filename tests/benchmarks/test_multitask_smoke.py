"""Smoke test: the many-task benchmark at its smallest setting (the two-task phantom recipe,
one round of two steps) runs every hospital in the three federations, writes its table and
plot, and reuses finished runs when called again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..tiny_recipes import tiny_multitask, write_recipe

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "multitask.py"


def test_multitask_benchmark_smallest_setting(tmp_path: Path) -> None:
    model, data = tiny_multitask()
    recipe = write_recipe(tmp_path, "tasks", model=model, data=data)
    out, result = tmp_path / "runs", tmp_path / "multitask.md"
    cmd = [sys.executable, str(SCRIPT), "--recipe", str(recipe), "--rounds", "1"]
    cmd += ["--jobs", "2", "--out", str(out), "--result", str(result)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    text = result.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| grading", "| organs"))]
    assert [row.split("|")[2].strip() for row in rows] == ["ct", "mri", "ultrasound", "pathology"]
    for row in rows:  # a test value in each of the three federations
        many, own, alone = (float(c) for c in row.strip("|").split("|")[3:6])
        assert all(0.0 <= v <= 1.0 for v in (many, own, alone))
    assert result.with_suffix(".png").stat().st_size > 0
    assert sorted(p.name for p in out.glob("*-s0")) == [
        "alone-ct-s0",
        "alone-mri-s0",
        "alone-pathology-s0",
        "alone-ultrasound-s0",
        "many-s0",
        "single-grading-s0",
        "single-organs-s0",
    ]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows[0] in result.read_text()
