"""Federated strategies: which state stays personal, how shared state is aggregated, and what
a client adds to its local training. A new strategy overrides one or more of those three
methods; it needs no change to the client, the server or the round loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from lightning.pytorch import Callback
from torch import Tensor, nn

from omnifm.federated.aggregators import Aggregator
from omnifm.federated.callbacks import ProximalTerm
from omnifm.functional import adaptive_step, momentum_step, weighted_average
from omnifm.tasks.base import OmniFMTask

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBN",
    "FedPer",
    "FedProx",
    "FedYogi",
    "OmniFM",
    "Strategy",
]


class Strategy:
    """FedAvg's rules; subclasses change the personal keys, aggregation or client loss."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        """State-dict keys that never leave a client (default: none); chosen from the task's
        ``parameter_groups()`` (encoder, stack, head, personal)."""
        return set()

    def bind(self, model: OmniFMTask) -> None:
        """Called once by the server with the run's model, before round 1 (default: nothing)."""

    def aggregate(
        self,
        states: list[dict[str, Tensor]],
        num_examples: list[int],
        current: dict[str, Tensor],
        aggregator: Aggregator | None = None,
    ) -> dict[str, Tensor]:
        """New shared state from the clients' shared states: ``aggregator`` (the recipe's
        ``federation.aggregator``; default the example-weighted mean) of them."""
        if aggregator is not None:
            return aggregator(states, num_examples)
        return weighted_average(states, [float(n) for n in num_examples])

    def state_dict(self) -> dict[str, Any]:
        """What the server keeps across rounds (default: nothing); saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def client_callbacks(self, shared: Mapping[str, Tensor]) -> list[Callback]:
        """Lightning callbacks a client adds to its local Trainer this round, given the round's
        shared state: a loss term (``omnifm.tasks.hooks.LossTerm``), a gradient correction
        (``on_before_optimizer_step``), ... (default: none)."""
        return []

    def __repr__(self) -> str:  # the hyperparameters; state (``_``-named) is left out
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
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


class _ServerOptimizer(Strategy):
    """FedAvg whose server treats ``aggregate(states) - current`` as a pseudo-gradient and
    steps its trainable parameters with an optimizer that keeps state across rounds (buffers
    such as batch-norm statistics take the aggregate)."""

    def __init__(self) -> None:
        self._parameters: set[str] = set()
        self._state: dict[str, Any] = {"rounds": 0}

    def bind(self, model: OmniFMTask) -> None:
        self._parameters = {name for name, _ in model.named_parameters()}

    def aggregate(
        self,
        states: list[dict[str, Tensor]],
        num_examples: list[int],
        current: dict[str, Tensor],
        aggregator: Aggregator | None = None,
    ) -> dict[str, Tensor]:
        averaged = super().aggregate(states, num_examples, current, aggregator)
        keys = [k for k in averaged if k in self._parameters and averaged[k].is_floating_point()]
        self._state["rounds"] += 1
        stepped = self.step({k: current[k] for k in keys}, {k: averaged[k] for k in keys})
        return {**averaged, **stepped}

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = {"rounds": 0, **state}


class FedAvgM(_ServerOptimizer):
    """Hsu et al. 2019: server momentum on the pseudo-gradient, ``v = momentum v + g``,
    ``x = x - lr v`` (their experiments' momentum 0.9 with server lr 1.0)."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"FedAvgM needs lr > 0 and 0 <= momentum < 1, got {lr}, {momentum}")
        self.lr, self.momentum = lr, momentum

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        new, self._state["velocity"] = momentum_step(
            current, averaged, self._state.get("velocity"), self.lr, self.momentum
        )
        return new


class _Adaptive(_ServerOptimizer):
    rule: Literal["adam", "yogi", "adagrad"]

    def __init__(self, eta: float, beta_1: float, beta_2: float, tau: float) -> None:
        super().__init__()
        if eta <= 0 or tau <= 0 or not (0 <= beta_1 < 1 and 0 <= beta_2 < 1):
            raise ValueError(
                f"{type(self).__name__} needs eta > 0, tau > 0 and betas in [0, 1), got "
                f"eta={eta}, beta_1={beta_1}, beta_2={beta_2}, tau={tau}"
            )
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        moments = (self._state["m"], self._state["v"]) if "m" in self._state else None
        new, (self._state["m"], self._state["v"]) = adaptive_step(
            current,
            averaged,
            moments,
            self._state["rounds"],
            self.rule,
            self.eta,
            self.beta_1,
            self.beta_2,
            self.tau,
        )
        return new


class FedAdam(_Adaptive):
    """Reddi et al. 2021, Adam on the server (defaults of Flower's ``FedAdam``), its rate
    bias-corrected as Kingma & Ba's, ``t`` = the server's step count."""

    rule = "adam"

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(eta, beta_1, beta_2, tau)


class FedYogi(_Adaptive):
    """Reddi et al. 2021, Yogi on the server (defaults of Flower's ``FedYogi``)."""

    rule = "yogi"

    def __init__(
        self, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(eta, beta_1, beta_2, tau)


class FedAdagrad(_Adaptive):
    """Reddi et al. 2021, Adagrad on the server, no momentum (defaults of Flower's
    ``FedAdagrad``)."""

    rule = "adagrad"

    def __init__(self, eta: float = 0.1, tau: float = 1e-3) -> None:
        super().__init__(eta, 0.0, 0.0, tau)
