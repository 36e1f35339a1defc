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


def tiny_multitask() -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and data configs of two tasks sharing a small timm backbone and the stack: ct and
    mri classify phantoms, ultrasound and pathology segment them (32 pixels: the backbone's
    deepest map needs more than 16)."""
    common = {"backbone": "test_resnet", "embed_dim": 16, "stack": TINY_STACK}
    organs = tiny_data(("ultrasound", "pathology"))
    for client in organs["init_args"]["clients"]:
        client["data"]["class_path"] = "omnifm.datamodules.PhantomSegmentationDataModule"
        client["data"]["init_args"]["size"] = 32
    model = {
        "class_path": "omnifm.tasks.MultiTask",
        "init_args": {
            "shared": ["encoder.backbone", "stack"],
            "tasks": {
                "grading": {"class_path": "omnifm.tasks.ClassificationTask", "init_args": common},
                "organs": {"class_path": "omnifm.tasks.SegmentationTask", "init_args": common},
            },
        },
    }
    data = {
        "class_path": "omnifm.datamodules.MultiTaskDataModule",
        "init_args": {"tasks": {"grading": tiny_data(), "organs": organs}},
    }
    return model, data


def write_recipe(
    folder: Path,
    name: str,
    model: dict[str, Any] | None = None,
    strategy: str = "OmniFM",
    rounds: int = 2,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write a full recipe (model, data, trainer, federation) to ``folder/name.yaml``."""
    recipe = {
        "seed_everything": 0,
        "model": model or TINY_CLASSIFIER,
        "data": data or tiny_data(),
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
