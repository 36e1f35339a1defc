"""Federated strategies: which state stays personal, how shared state is aggregated, and what
a client adds to its loss. A new strategy overrides one or more of those three methods."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from omnifm.functional import proximal_term, weighted_average
from omnifm.tasks.base import OmniFMTask

__all__ = ["FedAvg", "FedBN", "FedPer", "FedProx", "OmniFM", "Strategy"]

ClientLoss = Callable[[OmniFMTask], Tensor]


class Strategy:
    """FedAvg's rules; subclasses change the personal keys, aggregation or client loss."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        """State-dict keys that never leave a client (default: none)."""
        return set()

    def aggregate(
        self, states: list[dict[str, Tensor]], num_examples: list[int], current: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """New shared state from the clients' shared states (default: example-weighted mean)."""
        return weighted_average(states, [float(n) for n in num_examples])

    def client_loss(self, shared: Mapping[str, Tensor]) -> ClientLoss | None:
        """A term a client adds to its training loss, given the round's shared state."""
        return None

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

    def client_loss(self, shared: Mapping[str, Tensor]) -> ClientLoss | None:
        reference = {k: v.detach().clone() for k, v in shared.items() if v.is_floating_point()}

        def term(model: OmniFMTask) -> Tensor:
            params = {k: p for k, p in model.named_parameters() if k in reference}
            ref = {k: reference[k] for k in params}
            return 0.5 * self.mu * proximal_term(params, ref).to(model.device)

        return term


class FedPer(Strategy):
    """Arivazhagan et al. 2019: the head stays on each client; the body is averaged."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        return model.head_parameter_names()


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
        return model.personal_parameter_names() | model.head_parameter_names()
