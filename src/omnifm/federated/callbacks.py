"""The federation's part of a client's local training, as Lightning callbacks.

A client adds these to each local Trainer; the task finds them through the protocols of
``omnifm.tasks.hooks`` and never holds federation state itself:

- ``BankRetrieval``: the round's bank snapshot, on the Trainer's device, for GSKR; counts
  which entries the training steps retrieved (the server ranks entries by it);
- ``ProximalTerm``: FedProx's ``mu / 2 * ||w - w_global||^2`` as a loss term.

A strategy hands its own callbacks to the client (``Strategy.client_callbacks``): a loss term,
a gradient correction in ``on_before_optimizer_step``, anything a Lightning callback can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from omnifm.bank import BankSnapshot
from omnifm.blocks import StackOutput
from omnifm.functional import proximal_term

__all__ = ["BankRetrieval", "ProximalTerm"]


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
