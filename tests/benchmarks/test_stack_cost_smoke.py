"""Smoke test: the stack cost benchmark times its smallest setting (phantom classification)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stack_cost.py"


def test_stack_cost_smallest_setting(tmp_path: Path) -> None:
    out = tmp_path / "stack_cost.md"
    cmd = [sys.executable, str(SCRIPT), "--data", "phantom", "--tasks", "classification"]
    cmd += ["--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--out", str(out)]
    cmd += ["--extra", "--model.init_args.backbone=test_resnet", "--model.init_args.embed_dim=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in out.read_text().splitlines() if line.startswith("| classif"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    plain, omnifm, slowdown = float(cells[2]), float(cells[3]), float(cells[4].rstrip("x"))
    assert plain > 0 and omnifm > 0 and abs(slowdown - plain / omnifm) < 0.01
    assert cells[5] in {"met", "missed"}
    assert int(cells[7].replace(",", "")) > int(cells[6].replace(",", ""))  # the stack's params
