"""Smoke test: the Flower overhead benchmark runs at its smallest setting and reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flower_overhead.py"
SMALLEST = ["--rounds", "1", "--clients", "2", "--steps", "1", "--modes", "inprocess", "simulation"]


def test_flower_overhead_benchmark_smallest_setting(tmp_path: Path) -> None:
    out = tmp_path / "flower_overhead.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALLEST, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, *table = ([c.strip() for c in row.strip().strip("|").split("|")] for row in rows)
    cells = [dict(zip(header, row, strict=True)) for row in table]
    assert [c["way"] for c in cells] == ["in process", "Flower simulation (Ray)"], text
    inprocess, simulation = cells
    assert inprocess["ratio to in process"] == "1.00"
    assert float(simulation["command (s)"]) > 0 and float(simulation["ratio to in process"]) > 0
    # one torch thread everywhere: the simulation ends with the in-process weights and bank
    assert float(simulation["max abs diff of weights and bank vs in process"]) == 0.0
    for needle in ("--modes inprocess simulation", "## Machine", "load average", "## What is"):
        assert needle in text
