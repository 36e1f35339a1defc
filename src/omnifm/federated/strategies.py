"""Federated strategies: which state stays personal, how shared state is aggregated, and what
a client adds to its local training. A new strategy overrides one or more of those three
methods; it needs no change to the client, the server or the round loop."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch import Callback
from torch import Tensor, nn

from omnifm.federated.callbacks import ProximalTerm
from omnifm.functional import weighted_average
from omnifm.tasks.base import OmniFMTask

__all__ = ["FedAvg", "FedBN", "FedPer", "FedProx", "OmniFM", "Strategy"]


class Strategy:
    """FedAvg's rules; subclasses change the personal keys, aggregation or client loss."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        """State-dict keys that never leave a client (default: none); chosen from the task's
        ``parameter_groups()`` (encoder, stack, head, personal)."""
        return set()

    def aggregate(
        self, states: list[dict[str, Tensor]], num_examples: list[int], current: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """New shared state from the clients' shared states (default: example-weighted mean)."""
        return weighted_average(states, [float(n) for n in num_examples])

    def client_callbacks(self, shared: Mapping[str, Tensor]) -> list[Callback]:
        """Lightning callbacks a client adds to its local Trainer this round, given the round's
        shared state: a loss term (``omnifm.tasks.hooks.LossTerm``), a gradient correction
        (``on_before_optimizer_step``), ... (default: none)."""
        return []

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class FedAvg(Strategy):
    """McMahan et al. 2017: everything shared, example-weighted averaging."""


class FedProx(Strategy):
    """Li et al. 2020: FedAvg plus ``mu / 2 * ||w - w_global||^2`` in each client's loss."""

    def __init__(self, mu: float = 0.01) -> None:
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = mu

    def client_callbacks(self, shared: Mapping[str, Tensor]) -> list[Callback]:
        return [ProximalTerm(self.mu, shared)]


class FedPer(Strategy):
    """Arivazhagan et al. 2019: the head stays on each client; the body is averaged."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        return model.parameter_groups()["head"]


class FedBN(Strategy):
    """Li et al. 2021: batch-norm parameters and running statistics stay on each client."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        keys = set()
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                keys |= {f"{name}.{k}" for k in module.state_dict()}
        return keys


class OmniFM(Strategy):
    """OmniFM: the OmniFM stack on, the PSP suffix token and the head personal."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        if model.stack is None:
            raise ValueError(
                "strategy OmniFM needs the OmniFM stack, but the model has stack: null; "
                "set model.init_args.stack (class_path: omnifm.blocks.OmniFMStack) or use "
                "a baseline strategy such as FedAvg or FedPer"
            )
        groups = model.parameter_groups()
        return groups["personal"] | groups["head"]
