"""TensorBoard loggers of a run, progress lines and the results table."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["ClientLogger", "append_csv", "format_table", "write_csv"]

log = logging.getLogger("omnifm")


class ClientLogger(TensorBoardLogger):
    """A client's TensorBoard curves across rounds: each round's steps follow the last ones."""

    def __init__(self, run_dir: Path, client: str, step_offset: int) -> None:
        super().__init__(run_dir / "clients", name="", version=client, default_hp_metric=False)
        self.step_offset = step_offset

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, (step or 0) + self.step_offset)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of dict rows (floats with 4 decimals)."""
    if not rows:
        return "(no results)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def append_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Add ``rows`` to the CSV at ``path`` (created if absent); rows already there keep their
    text, and the file is rewritten only when the new rows bring new columns."""
    if path.is_file():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            old, columns = list(reader), list(reader.fieldnames or [])
        if {k for row in rows for k in row} <= set(columns):
            with path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerows(rows)
            return
        rows = old + rows
    write_csv(rows, path)
