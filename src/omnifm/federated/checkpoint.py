"""Round checkpoints: written atomically, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["latest_run", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"]

LAST = "last.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"federated checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"federated checkpoint {path} cannot be read ({err}); it is corrupt or not an "
            "OmniFM checkpoint: pass another --ckpt_path, or start afresh without it"
        ) from err


def latest_run(output: Path, name: str) -> Path | None:
    """The newest ``output/name/version_N`` folder, if any."""
    versions = sorted(
        (p for p in (output / name).glob("version_*") if p.name[8:].isdigit()),
        key=lambda p: int(p.name[8:]),
    )
    return versions[-1] if versions else None


def resolve_checkpoint(ckpt_path: str, output: Path, name: str) -> Path:
    """``last`` means the newest run's ``checkpoints/last.pt``; anything else is a path."""
    if ckpt_path != "last":
        return Path(ckpt_path)
    run = latest_run(output, name)
    if run is None or not (run / "checkpoints" / LAST).is_file():
        raise FileNotFoundError(
            f"--ckpt_path last: no checkpoint under {output / name}/version_*/checkpoints/; "
            "run `omnifm fit` first, or give the checkpoint's path"
        )
    return run / "checkpoints" / LAST
