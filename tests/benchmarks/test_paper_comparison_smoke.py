"""Smoke test: the paper comparison driver runs its smallest setting (the phantom quickstart
suite), two runs at once, writes its table and plot, and reuses finished runs when called again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_comparison.py"


def test_paper_comparison_smallest_setting(tmp_path: Path) -> None:
    out, result = tmp_path / "runs", tmp_path / "quickstart.md"
    cmd = [sys.executable, str(SCRIPT), "quickstart", "--methods", "FedAvg", "OmniFM"]
    cmd += ["--rounds", "1", "--steps", "1", "--jobs", "2", "--out", str(out)]
    cmd += ["--result", str(result), "--extra", "--model.init_args.backbone=test_resnet"]
    cmd += ["--model.init_args.recalibrate_batches=1"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    text = result.read_text()
    main_table = text.split("per data source")[0]  # the second table breaks acc down by source
    rows = [line for line in main_table.splitlines() if line.startswith(("| FedAvg", "| OmniFM"))]
    assert len(rows) == 2, text
    for row in rows:
        acc, f1 = (float(c) for c in row.strip("|").split("|")[3:5])
        assert 0.0 <= acc <= 1.0 and 0.0 <= f1 <= 1.0
    assert "--model.init_args.stack=null" in text and "2 run(s) at once" in text
    assert result.with_suffix(".png").stat().st_size > 0
    assert (out / "quickstart" / "OmniFM_p1_s0.log").is_file()
    # a second call finds both runs finished and only rewrites the table
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows[1] in result.read_text().split("per data source")[0]
    assert "| OmniFM | 1 | " in text.split("per data source")[1]  # acc per phantom modality
