"""A client's local Trainer: its defaults, its device, its seed, and quiet banners.

The one place both sides of a federation take these from: the CLI's trainer defaults, the
in-process clients, the Flower ClientApp, and the server that seeds every local fit.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import Trainer

from omnifm import hide_foreign_warnings

__all__ = [
    "QUIET",
    "TRAINER_DEFAULTS",
    "client_seed",
    "local_trainer",
    "quiet_lightning",
    "trainer_device",
]

# every local Trainer: no checkpoints, summaries or progress bars of its own (a run builds one
# per client per round; the federation checkpoints and logs itself)
QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "log_every_n_steps": 1,
}
# what a recipe's ``trainer`` section starts from: also one local epoch per round, and CUDA
# when present
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 1, "accelerator": "auto", "devices": 1, **QUIET}


def local_trainer(settings: dict[str, Any], root: str, **overrides: Any) -> Trainer:
    """A fresh local Trainer: ``QUIET``, the ``trainer`` ``settings`` (a recipe's start from
    ``TRAINER_DEFAULTS``), then ``overrides``; callbacks of both are kept."""
    callbacks = [*_listed(settings.get("callbacks")), *_listed(overrides.pop("callbacks", None))]
    kwargs = {"default_root_dir": root, **QUIET, **settings, **overrides}
    return Trainer(**{**kwargs, "callbacks": callbacks})


def _listed(callbacks: Any) -> list[Any]:
    """A Trainer's ``callbacks`` argument (none, one, or a list) as a list."""
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]


def trainer_device(settings: dict[str, Any]) -> torch.device:
    """The device a local Trainer of these settings trains on (``trainer.accelerator`` and
    ``devices`` honoured), for work done outside a Trainer (the bank's warm-up)."""
    with quiet_lightning():
        return local_trainer(settings, ".", logger=False).strategy.root_device


def client_seed(seed: int, round_: int, client: str) -> int:
    """The seed of one client's local fit: a function of (seed, round, client) only."""
    return zlib.crc32(f"{seed}/{round_}/{client}".encode())


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-Trainer banners: a run builds one Trainer per client per round."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*"):
            warnings.filterwarnings("ignore", pattern)
        hide_foreign_warnings()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
