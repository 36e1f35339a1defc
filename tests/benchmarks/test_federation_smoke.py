"""Smoke tests: the federation benchmarks (time, profile, scale) run at their smallest setting
and report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY_RUN = [
    *("--rounds", "1", "--clients", "2", "--steps", "1", "--backbone", "test_resnet"),
    *("--size", "16", "--batch", "8", "--embed-dim", "16", "--spectral-dim", "8"),
    *("--low-pass", "8"),
]
FOOTER = ("- command: `python benchmarks/", "## Machine", "total wall time", "load average")


def run_script(name: str, args: list[str], tmp_path: Path) -> list[str]:
    """Run ``benchmarks/<name>.py`` with ``args``; the lines of the markdown it wrote."""
    out = tmp_path / f"{name}.md"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    for needle in FOOTER:
        assert needle in text, text
    return text.splitlines()


def test_federation_time_smallest_setting(tmp_path: Path) -> None:
    lines = run_script("federation_time", [*TINY_RUN, "--repeats", "1"], tmp_path)
    rows = _table(lines, "| model | raw PyTorch (s) |")
    assert [r["model"] for r in rows] == ["with OmniFM stack", "`stack=None` (plain)"]
    for cells in rows:
        assert cells["steps raw/Lightning/fed"] == "2/2/2"  # same optimizer steps each way
        fed, pl = float(cells["federated (s)"]), float(cells["plain Lightning (s)"])
        assert fed > 0 and pl > 0
        # the seconds are rounded to 0.01 s, the ratio is of the unrounded ones
        ratio = float(cells["federated/Lightning"])
        assert (fed - 0.005) / (pl + 0.005) - 1e-3 <= ratio <= (fed + 0.005) / (pl - 0.005) + 1e-3
        assert float(cells["fed/Lightning, fastest runs"]) > 0
        assert cells["goal fed/Lightning <= 1.10"] in {"met", "**not met**"}
    around = _table(lines, "| model | way | seconds |")
    assert len(around) == 6 and all(float(r["seconds"].split(" / ")[0]) >= 0 for r in around)
    assert "## What is timed" in lines and "--repeats 1" in "\n".join(lines)


def test_federation_profile_smallest_setting(tmp_path: Path) -> None:
    lines = run_script("federation_profile", [*TINY_RUN, "--top", "5"], tmp_path)
    parts = {r["part"].lstrip("↳ "): r for r in _table(lines, "| part |")}
    # the rows that find functions by name still find them in the library as it is
    for part in (
        "local fits (`Client.fit`)",
        "Trainer construction",
        "`Trainer.fit`",
        "optimizer steps (loop `advance`: batch, forward, backward, AdamW, hooks)",
    ):
        assert float(parts[part]["federated (s)"]) > 0, part
    assert "rest of `fit_round`" in parts
    assert len(_table(lines, "| function | own (s) |")) == 5


def test_scale_smallest_setting(tmp_path: Path, medmnist_dir: Path) -> None:
    out = tmp_path / "scale.md"
    args = ["--counts", "10", "12", "--held", "12", "--rounds", "1", "--fixed", "2"]
    args += ["--steps", "1", "--parts", "memory", "--backbone", "test_resnet"]
    args += [
        "--data",
        str(medmnist_dir.parent),
        "--out",
        str(tmp_path / "runs"),
        "--result",
        str(out),
    ]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "scale.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = out.read_text().splitlines()
    rows = _table(lines, "| clients |")
    assert [(r["clients"], r["aggregation"]) for r in rows] == [
        ("10", "streamed"),
        ("12", "streamed"),
        ("12", "held"),
    ]
    for cells in rows:
        assert float(cells["peak, 10% rounds (MB)"].replace(",", "")) > 0
        assert int(cells["bank entries"]) > 0
    assert any(line.startswith("Memory per extra client, (12 - 10) / 2") for line in lines)
    assert out.with_suffix(".png").stat().st_size > 0


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
