"""Smoke test: the bank retrieval benchmark runs at its smallest setting and all methods agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bank_retrieval.py"


def test_bank_retrieval_benchmark_smallest_setting(tmp_path: Path) -> None:
    out = tmp_path / "bank_retrieval.md"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "1000", "--repeats", "1", "--warmup", "1"]
    proc = subprocess.run(
        [*cmd, "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all methods return the same top-8 (within 1e-05): True" in proc.stdout
    text = out.read_text()
    assert "| prototypes | ours (ms) | numpy (ms) |" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| prototypes |"))
    row = next(line for line in lines if line.startswith("| 1,000 |"))
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells["top-k correct (ours/numpy/faiss)"] in {"yes/yes/yes", "yes/yes/n/a"}
    assert float(cells["ours (ms)"]) > 0
    assert "--sizes 1000" in text and "## Machine" in text and "total wall time" in text


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]
