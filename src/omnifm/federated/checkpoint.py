"""Round checkpoints: written atomically, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

__all__ = [
    "CheckpointMismatch",
    "check_fits",
    "latest_run",
    "load_checkpoint",
    "recipe_differences",
    "resolve_checkpoint",
    "save_checkpoint",
    "shorten",
]

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


class CheckpointMismatch(ValueError):
    """A checkpoint whose tensors do not fit the model that the current recipe builds."""


def check_fits(saved: Mapping[str, Tensor], model: Mapping[str, Tensor], what: str) -> None:
    """Raise ``CheckpointMismatch`` unless ``saved`` has the keys and shapes of ``model``."""
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(model[k].shape)}"
        for k in model
        if k in saved and saved[k].shape != model[k].shape
    ]
    groups = (
        ("tensors of other shapes (checkpoint vs model)", shapes),
        ("tensors missing from the checkpoint", sorted(set(model) - set(saved))),
        ("tensors the model lacks", sorted(set(saved) - set(model))),
    )
    parts = [f"{len(items)} {label}: {shorten(items, 2)}" for label, items in groups if items]
    if parts:
        raise CheckpointMismatch(
            f"the checkpoint's {what} does not fit the model this recipe builds: "
            + "; ".join(parts)
        )


def shorten(items: list[str], limit: int) -> str:
    """``a, b and 3 more``."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (``model.init_args.embed_dim``, ``data.init_args.clients[0].name``)."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    return {k: v for key, item in items for k, v in _flatten(item, key).items()}


def recipe_differences(
    saved: str, current: str, ignore: tuple[str, ...] = ("ckpt_path",)
) -> list[str]:
    """The settings of two resolved recipes (YAML) that differ, as ``key: A in the run, B now``."""
    old, new = _flatten(yaml.safe_load(saved) or {}), _flatten(yaml.safe_load(current) or {})
    return [
        f"{key}: {old.get(key)!r} in the run, {new.get(key)!r} now"
        for key in dict.fromkeys([*old, *new])
        if key not in ignore and old.get(key) != new.get(key)
    ]
