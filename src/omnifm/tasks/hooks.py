"""What a Lightning callback can add to a task's steps: the contract between task and
federation.

A task never learns that it is federated. The federation's part of local training is a set of
Trainer callbacks (``omnifm.federated.callbacks``) that a client adds to each local Trainer;
in its steps a task asks the running Trainer's callbacks for

- ``RetrievalSource``: the bank its OmniFM stack retrieves global spectral prototypes from;
- ``LossTerm``: terms added to the training loss (a strategy's client term, e.g. FedProx).

Everything else a federation needs uses Lightning's own callback hooks: the retrieved entry
ids come back in ``training_step``'s output (``on_train_batch_end``), and gradient
corrections go in ``on_before_optimizer_step``. Outside a Trainer (a notebook calling
``model(batch)``) there is no bank and no extra term.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

from omnifm.blocks import Retriever, StackOutput

if TYPE_CHECKING:
    from omnifm.tasks.base import OmniFMTask

__all__ = ["LossTerm", "RetrievalSource", "loss_terms", "retriever"]


@runtime_checkable
class RetrievalSource(Protocol):
    """A callback that gives the task a bank to retrieve from (``None``: no retrieval)."""

    @property
    def retriever(self) -> Retriever | None: ...


@runtime_checkable
class LossTerm(Protocol):
    """A callback that adds a term to the training loss; logged as ``train/<name>``."""

    name: str

    def loss_term(self, task: OmniFMTask, batch: dict[str, Any], out: StackOutput) -> Tensor: ...


def retriever(callbacks: Iterable[object]) -> Retriever | None:
    """The bank of the first ``RetrievalSource`` among ``callbacks``; ``None`` without one."""
    return next((c.retriever for c in callbacks if isinstance(c, RetrievalSource)), None)


def loss_terms(callbacks: Iterable[object]) -> list[LossTerm]:
    """The ``LossTerm`` callbacks, in the Trainer's order."""
    return [c for c in callbacks if isinstance(c, LossTerm)]
