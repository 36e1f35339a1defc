"""Tiny federations for engine tests: phantom clients and a small timm backbone."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import seed_everything

from omnifm.blocks import OmniFMStack
from omnifm.datamodules import ClientSource, FederatedDataModule, PhantomDataModule
from omnifm.federated import Federation, FederationConfig, Strategy
from omnifm.tasks import ClassificationTask

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
