"""Smoke test: the leakage audit runs its smallest setting on the real MedMNIST breast file (one
round of two steps, exact and epsilon-4 uploads), writes its tables, plot and per-run cache,
and a second call reuses the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "privacy.py"
DATA = REPO.parent / "shared" / "data"


@pytest.mark.skipif(
    not (DATA / "medmnist" / "breastmnist.npz").is_file(),
    reason=f"the real MedMNIST file {DATA / 'medmnist' / 'breastmnist.npz'} is absent "
    "(the audit runs on ../shared/data only)",
)
def test_privacy_audit_smallest_setting(tmp_path: Path) -> None:
    out, result = tmp_path / "runs", tmp_path / "privacy.md"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--threads", "1"]
    cmd += ["--out", str(out), "--result", str(result)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = result.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "none (exact k-means)" in rows and "epsilon 4" in rows, text
    assert "### Inversion (ultrasound sites)" in text and "## Machine" in text
    assert "--smoke" in text and "total wall time" in text
    assert result.with_suffix(".png").stat().st_size > 0
    for name in ("exact_s0", "eps4_s0"):
        run = json.loads((out / name / "result.json").read_text())
        member = run["membership"]
        for key in ("proto_auc", "proto_auc_calibrated", "personal_auc"):
            for value in (member[key], member[f"{key}_balanced"]):  # all images, per class
                assert 0.0 <= value <= 1.0, (name, key, member)
        assert 0.0 <= run["accuracy"] <= 1.0
        inv = run["inversion"]
        assert 0.0 < inv["proto_img"][0] <= 1.0 and inv["proto_img_base"][1] > 0
        # the attacker's decoder sees exactly the tokens the site summarised
        assert all(s["token_match_distance"] < 1e-4 for s in inv["sites"])
        assert all(s["images_in_upload"] == s_members(member, s["site"]) for s in inv["sites"])
    private = json.loads((out / "eps4_s0" / "result.json").read_text())
    assert 3.5 < private["epsilon_spent"] <= 4.0  # the noise was calibrated to the target
    assert set(private["uploads"].values()) == {1}  # every site uploaded in its one round
    # a second call finds both runs cached and only rewrites the report
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "exact_s0: cached" in again.stdout and "eps4_s0: cached" in again.stdout
    assert rows["epsilon 4"] in result.read_text()


def s_members(membership: dict, site: str) -> int:
    return next(r["members"] for r in membership["sites"] if r["site"] == site)
