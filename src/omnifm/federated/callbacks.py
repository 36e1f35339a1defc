"""The federation's part of a client's local training, as Lightning callbacks.

A client adds these to each local Trainer; the task finds them through the protocols of
``omnifm.tasks.hooks`` and never holds federation state itself:

- ``BankRetrieval``: the round's bank snapshot, on the Trainer's device, for GSKR; counts
  which entries the training steps retrieved (the server ranks entries by it);
- ``ProximalTerm``: FedProx's ``mu / 2 * ||w - w_global||^2`` as a loss term (Ditto's too);
- ``ControlVariates``: SCAFFOLD's gradient correction and control-variate update;
- ``DynamicRegularizer``: FedDyn's client term and gradient state;
- ``ModelContrastive``: MOON's term between the local, global and previous representations;
- ``CategoryGuidance``: GPFL's conditional inputs and its guidance of the global features.

A strategy hands its own callbacks to the client (``Strategy.client_callbacks``): a loss term,
a gradient correction in ``on_before_optimizer_step``, anything a Lightning callback can do.
They see the client's round as a ``LocalRound``: what the server sent, the client's own state
(kept across rounds, never sent) and what goes back to the strategy's server.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.func import functional_call

from omnifm.bank import BankSnapshot
from omnifm.blocks import StackOutput
from omnifm.functional import (
    category_guidance_loss,
    control_variate_update,
    dynamic_regularizer,
    model_contrastive_loss,
    proximal_term,
)

__all__ = [
    "BankRetrieval",
    "CategoryGuidance",
    "ControlVariates",
    "DynamicRegularizer",
    "LocalRound",
    "ModelContrastive",
    "ProximalTerm",
    "cpu_copy",
    "evaluating",
]


@dataclass
class LocalRound:
    """One client's round as its strategy's client side sees it."""

    model: LightningModule  # the task, holding the round's shared weights and personal state
    shared: Mapping[str, Tensor]  # the round's global shared state (``FitIns.weights``)
    server: Mapping[str, Tensor] = field(default_factory=dict)  # ``Strategy.broadcast()``
    state: dict[str, Tensor] = field(default_factory=dict)  # kept across rounds, never sent
    upload: dict[str, Tensor] = field(default_factory=dict)  # to the strategy's server


def cpu_copy(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block, in its former mode after it."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class BankRetrieval(Callback):
    """Gives the task the round's bank (``RetrievalSource``) and counts the retrieved entries.

    Args:
        snapshot: the bank as the server sent it; ``None``: no retrieval this round.
    """

    def __init__(self, snapshot: BankSnapshot | None) -> None:
        self._bank = snapshot
        self._hits: list[Tensor] = []

    @property
    def retriever(self) -> BankSnapshot | None:
        return self._bank

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._bank is not None:  # before the first step: retrieval on the model's device
            self._bank = self._bank.to(trainer.strategy.root_device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if isinstance(outputs, Mapping) and "hit_ids" in outputs:
            self._hits.append(outputs["hit_ids"])  # on the device; moved once, in ``hits``

    def hits(self) -> tuple[Tensor, Tensor]:
        """Ids of the entries retrieved since the start of the fit and how often each was."""
        ids = torch.cat(self._hits).reshape(-1).cpu() if self._hits else torch.empty(0).long()
        return ids.unique(return_counts=True)


class ProximalTerm(Callback):
    """``mu / 2 * ||w - w_global||^2`` over the shared floating-point parameters, added to
    each training loss (``LossTerm``; logged as ``train/client_term``)."""

    name = "client_term"

    def __init__(self, mu: float, shared: Mapping[str, Tensor]) -> None:
        self.mu = mu
        self.reference = {k: v.detach().clone() for k, v in shared.items() if v.is_floating_point()}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self.reference = {k: v.to(device) for k, v in self.reference.items()}

    def loss_term(self, task: LightningModule, batch: Any, out: StackOutput) -> Tensor:
        params = {k: p for k, p in task.named_parameters() if k in self.reference}
        ref = {k: self.reference[k] for k in params}
        return 0.5 * self.mu * proximal_term(params, ref).to(task.device)


def effective_lr(group: Mapping[str, Any]) -> float:
    """The rate of an optimizer parameter group as a plain SGD step would have it: ``lr``, or
    ``lr / (1 - momentum)`` with heavy-ball momentum (its steady-state step per gradient)."""
    momentum = float(group.get("momentum", 0.0) or 0.0)
    return float(group["lr"]) / (1.0 - momentum)


class ControlVariates(Callback):
    """SCAFFOLD's client side (Karimireddy et al. 2020): every step's gradient of the shared
    parameters is corrected by ``c - c_i`` (server and client control variates); after the fit
    the client's variate takes option II's update, and its change goes to the server.

    ``local.server`` and ``local.state`` hold the variates by parameter name (the client's
    starts at zero). Option II divides the drift by the number of steps times the rate: the
    first parameter group's at the end of the fit, as ``effective_lr``. The paper's method is
    for plain SGD: with momentum the correction is amplified with the gradient, and on the
    MedMNIST benchmark it was unstable (it warns); with the plain rate in option II it diverged
    at once, with ``lr / (1 - momentum)`` it did not, with the exact rate of momentum from a zero
    buffer it did again; so did ``c_i`` as the mean of the round's raw gradients (which option
    II equals under plain SGD), at round 19."""

    def __init__(self, local: LocalRound) -> None:
        self.local = local
        self.server = dict(local.server)
        self.own = {k: local.state.get(k, torch.zeros_like(v)) for k, v in self.server.items()}
        self.correction: dict[str, Tensor] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self.correction = {k: (self.server[k] - self.own[k]).to(device) for k in self.server}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if any(g.get("momentum") or g.get("betas") for g in trainer.optimizers[0].param_groups):
            warnings.warn(
                "SCAFFOLD corrects the gradients of a plain SGD step; with an optimizer with "
                "momentum (or Adam's moments) the correction is amplified and training can be "
                "unstable: use model.init_args.optimizer torch.optim.SGD without momentum",
                stacklevel=1,
            )

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        for name, p in pl_module.named_parameters():
            if p.grad is not None and name in self.correction:
                p.grad.add_(self.correction[name])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        steps = trainer.global_step
        if steps == 0:  # no data this round: the variates stay
            return
        lr = effective_lr(trainer.optimizers[0].param_groups[0])
        end = cpu_copy({k: p for k, p in pl_module.named_parameters() if k in self.server})
        start = {k: self.local.shared[k] for k in self.server}
        new = control_variate_update(self.own, self.server, start, end, steps, lr)
        self.local.upload.update({k: new[k] - self.own[k] for k in new})
        self.local.state.update(new)


class DynamicRegularizer(Callback):
    """FedDyn's client side (Acar et al. 2021): adds
    ``alpha / 2 ||theta - theta_server||^2 - <g_k, theta>`` to each training loss (``LossTerm``,
    logged as ``train/client_term``); after the fit ``g_k <- g_k - alpha (theta_k - theta_server)``.
    ``local.state`` holds ``g_k`` by parameter name (zero at first)."""

    name = "client_term"

    def __init__(self, alpha: float, local: LocalRound, keys: set[str]) -> None:
        self.alpha = alpha
        self.local = local
        self.reference = {k: local.shared[k].detach().clone() for k in keys}
        self.gradient = {
            k: local.state.get(k, torch.zeros_like(v)) for k, v in self.reference.items()
        }

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self.reference = {k: v.to(device) for k, v in self.reference.items()}
        self.gradient = {k: v.to(device) for k, v in self.gradient.items()}

    def loss_term(self, task: LightningModule, batch: Any, out: StackOutput) -> Tensor:
        params = {k: p for k, p in task.named_parameters() if k in self.reference}
        return dynamic_regularizer(params, self.reference, self.gradient, self.alpha)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = dict(pl_module.named_parameters())
        self.local.state.update(
            cpu_copy(
                {
                    k: self.gradient[k] - self.alpha * (params[k].detach() - self.reference[k])
                    for k in self.reference
                }
            )
        )


class ModelContrastive(Callback):
    """MOON's term (Li et al. 2021): ``mu`` times the model-contrastive loss between the
    representation the head reads (``StackOutput.suffix``) under the model being trained, under
    the round's global weights (positive) and under the client's previous local weights
    (negative); a ``LossTerm`` logged as ``train/client_term``. The other two representations
    come from the same module run with the other weights (``torch.func.functional_call``), in
    eval mode and without gradients: no model copies."""

    name = "client_term"

    def __init__(
        self,
        mu: float,
        tau: float,
        global_state: Mapping[str, Tensor],
        previous_state: Mapping[str, Tensor],
    ) -> None:
        self.mu, self.tau = mu, tau
        self.states = (dict(global_state), dict(previous_state))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self.states = tuple({k: v.to(device) for k, v in s.items()} for s in self.states)

    def loss_term(self, task: Any, batch: Any, out: StackOutput) -> Tensor:
        bank = task.current_bank()
        with torch.no_grad(), evaluating(task):
            z_global, z_previous = (
                functional_call(task, state, (batch, bank))[1].suffix for state in self.states
            )
        return self.mu * model_contrastive_loss(out.suffix, z_global, z_previous, self.tau)


class CategoryGuidance(Callback):
    """GPFL's client side (Zhang et al. 2023) for a task with a ``GlobalGuidance`` at
    ``task.gpfl``: as the fit starts, the generic and personalised conditional inputs from the
    category embeddings and the client's class frequencies (counted once, kept in
    ``local.state``); every step adds the guidance of the global features
    (``category_guidance_loss``; a ``LossTerm``, ``train/client_term``), and every gradient of
    the valve and the embeddings ``mu`` times the weight (the paper's weight decay on them, in
    its own optimizer there)."""

    name = "client_term"

    def __init__(self, local: LocalRound, lam: float, mu: float) -> None:
        self.local, self.lam, self.mu = local, lam, mu
        self.generic = self.frozen = torch.zeros(0)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        guidance = pl_module.gpfl
        if "class_frequency" not in self.local.state:
            loader = trainer.datamodule.train_dataloader()
            labels = torch.cat([b["label"].long().view(-1) for b in loader])
            counts = torch.bincount(labels, minlength=guidance.categories.num_embeddings)
            self.local.state["class_frequency"] = counts.float() / counts.sum()
        self.generic, personal = guidance.conditions(self.local.state["class_frequency"])
        with torch.no_grad():
            guidance.personal_input.copy_(personal)
        self.frozen = guidance.categories.weight.detach().clone()

    def loss_term(self, task: Any, batch: Any, out: StackOutput) -> Tensor:
        guidance = task.gpfl
        features = guidance.valve(out.suffix, self.generic)
        labels = batch["label"].long().view(-1)
        weights = guidance.categories.weight
        return category_guidance_loss(features, weights, self.frozen, labels, self.lam)

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        guidance = pl_module.gpfl
        for p in (*guidance.valve.parameters(), guidance.categories.weight):
            if p.grad is not None:
                p.grad.add_(p.detach(), alpha=self.mu)
