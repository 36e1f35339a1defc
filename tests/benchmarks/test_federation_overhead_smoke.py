"""Smoke test: the federation overhead benchmark runs at its smallest setting and reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "federation_overhead.py"
SMALLEST = [
    *("--rounds", "1", "--clients", "2", "--steps", "1", "--backbone", "test_resnet"),
    *("--size", "16", "--batch", "8", "--embed-dim", "16", "--spectral-dim", "8"),
    *("--low-pass", "8", "--client-counts", "2", "4", "--per-round", "2"),
    *("--memory-rounds", "1", "--top", "5", "--repeats", "1"),
]


def test_federation_overhead_benchmark_smallest_setting(tmp_path: Path) -> None:
    out = tmp_path / "federation_overhead.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALLEST, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    lines = text.splitlines()

    rows = _table(lines, "| model | raw PyTorch (s) |")
    assert [r["model"] for r in rows] == ["with OmniFM stack", "`stack=None` (plain)"], text
    for cells in rows:
        assert cells["steps raw/Lightning/fed"] == "2/2/2"  # same optimizer steps each way
        assert float(cells["federated (s)"]) > 0 and float(cells["plain Lightning (s)"]) > 0
        fed, pl = float(cells["federated (s)"]), float(cells["plain Lightning (s)"])
        # the seconds are rounded to 0.01 s, the ratio is of the unrounded ones
        ratio = float(cells["federated/Lightning"])
        assert (fed - 0.005) / (pl + 0.005) - 1e-3 <= ratio <= (fed + 0.005) / (pl - 0.005) + 1e-3
        assert float(cells["fed/Lightning, fastest runs"]) > 0
        assert cells["goal fed/Lightning <= 1.10"] in {"met", "**not met**"}

    assert "## Where the federated overhead goes (cProfile)" in text
    assert "BN recalibration pass (`OmniFMTask.on_train_end`)" in text

    memory = _table(lines, "| clients |")
    assert [r["clients"] for r in memory] == ["2", "4"], text
    for cells in memory:
        assert float(cells["peak RSS ru_maxrss (MB)"]) > 0
        assert int(cells["personal state per client (B)"].replace(",", "")) > 0
    assert "Per extra client = (peak(4) - peak(2)) / 2" in text
    for needle in ("--client-counts 2 4", "## Machine", "total wall time", "load average"):
        assert needle in text
    assert "## What is timed" in text


def _table(lines: list[str], header_start: str) -> list[dict[str, str]]:
    """The rows (as header -> cell) of the markdown table whose header starts so."""
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header, rows = _cells(lines[i]), []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, _cells(line), strict=True)))
    return rows


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]
