"""Tiny federations for engine tests: phantom clients and a small timm backbone."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch import seed_everything

from omnifm.blocks import OmniFMStack
from omnifm.datamodules import (
    ClientSource,
    FederatedDataModule,
    MultiTaskDataModule,
    PhantomDataModule,
    PhantomSegmentationDataModule,
)
from omnifm.federated import Federation, FederationConfig, Strategy
from omnifm.federated.messages import FitRes
from omnifm.tasks import ClassificationTask, MultiTask, SegmentationTask

MODALITIES = ("ct", "mri", "ultrasound")


def tiny_data(modalities: tuple[str, ...] = MODALITIES, n: int = 24) -> FederatedDataModule:
    clients = [
        ClientSource(
            name=m,
            data=PhantomDataModule(modality=m, num_train=n, num_val=8, num_test=8, size=16),
        )
        for m in modalities
    ]
    return FederatedDataModule(clients, in_channels=1, batch_size=8)


def tiny_task(stack: bool = True) -> ClassificationTask:
    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    return ClassificationTask(
        num_classes=4,
        in_channels=1,
        backbone="test_resnet",
        embed_dim=16,
        stack=factory if stack else None,
    )


def tiny_federation(
    tmp_path: Path, strategy: Strategy, rounds: int = 2, stack: bool = True, **kwargs
) -> Federation:
    data = kwargs.pop("data", None) or tiny_data()
    config = FederationConfig(
        rounds=rounds, strategy=strategy, output=str(tmp_path), name="test", **kwargs
    )
    trainer = {"max_steps": 2, "accelerator": "cpu", "deterministic": True}
    seed_everything(0, verbose=False)  # same initial weights in every call, as the CLI does
    return Federation(tiny_task(stack), data, config, trainer)


def tiny_multitask(stack: bool = True) -> MultiTask:
    """Phantom classification and segmentation sharing a small timm backbone and the stack."""

    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    common = {"in_channels": 1, "backbone": "test_resnet", "embed_dim": 16}
    return MultiTask(
        {
            "grading": ClassificationTask(
                num_classes=4, stack=factory if stack else None, **common
            ),
            "organs": SegmentationTask(num_classes=2, stack=factory if stack else None, **common),
        }
    )


def tiny_multitask_data(n: int = 16) -> MultiTaskDataModule:
    """Two phantom hospitals per task: ct and mri classify, ultrasound and pathology segment."""
    organs = [
        ClientSource(
            name=m,
            data=PhantomSegmentationDataModule(
                modality=m, num_train=n, num_val=8, num_test=8, size=32
            ),
        )
        for m in ("ultrasound", "pathology")
    ]
    return MultiTaskDataModule(
        {
            "grading": tiny_data(("ct", "mri"), n),
            "organs": FederatedDataModule(organs, in_channels=1, batch_size=8),
        }
    )


def tiny_multitask_federation(
    tmp_path: Path, strategy: Strategy, rounds: int = 2, **kwargs
) -> Federation:
    data = kwargs.pop("data", None) or tiny_multitask_data()
    config = FederationConfig(
        rounds=rounds, strategy=strategy, output=str(tmp_path), name="test", **kwargs
    )
    trainer = {"max_steps": 2, "accelerator": "cpu", "deterministic": True}
    seed_everything(0, verbose=False)
    return Federation(tiny_multitask(), data, config, trainer)


def capture_results(run: Any) -> list[FitRes]:
    """Every result ``run``'s clients send the server, with its weights (the server releases
    them once folded in, so each is recorded as it arrives)."""
    sent: list[FitRes] = []
    fit_clients = run.fit_clients

    def spy(round_: int, chosen: list[str]) -> Iterator[tuple[str, FitRes | str]]:
        for name, result in fit_clients(round_, chosen):
            if isinstance(result, FitRes):
                sent.append(dataclasses.replace(result, weights=dict(result.weights)))
            yield name, result

    run.fit_clients = spy
    return sent
