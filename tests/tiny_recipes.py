"""Tiny recipes for CLI tests: two phantom hospitals, 16-pixel images, 2 rounds of 2 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_STACK = {
    "class_path": "omnifm.blocks.OmniFMStack",
    "init_args": {"spectral_dim": 8, "low_pass_size": 8, "top_k": 4, "num_layers": 1},
}
TINY_CLASSIFIER = {
    "class_path": "omnifm.tasks.ClassificationTask",
    "init_args": {"backbone": "test_resnet", "embed_dim": 16, "stack": TINY_STACK},
}


def tiny_data(modalities: tuple[str, ...] = ("ct", "mri")) -> dict[str, Any]:
    """A FederatedDataModule config: one phantom client per modality, 16 training images."""
    phantom = {"size": 16, "num_train": 16, "num_val": 8, "num_test": 8}
    clients = [
        {
            "name": m,
            "data": {
                "class_path": "omnifm.datamodules.PhantomDataModule",
                "init_args": {"modality": m, **phantom},
            },
        }
        for m in modalities
    ]
    return {
        "class_path": "omnifm.datamodules.FederatedDataModule",
        "init_args": {"in_channels": 1, "batch_size": 8, "clients": clients},
    }


def write_recipe(
    folder: Path,
    name: str,
    model: dict[str, Any] | None = None,
    strategy: str = "OmniFM",
    rounds: int = 2,
) -> Path:
    """Write a full recipe (model, data, trainer, federation) to ``folder/name.yaml``."""
    recipe = {
        "seed_everything": 0,
        "model": model or TINY_CLASSIFIER,
        "data": tiny_data(),
        "trainer": {"max_steps": 2, "accelerator": "cpu"},
        "federation": {
            "rounds": rounds,
            "strategy": strategy,
            "output": str(folder / "runs"),
            "name": name,
            "bank": {"capacity": 32, "prototypes_per_client": 4},
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
