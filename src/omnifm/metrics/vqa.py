"""Answer accuracy of visual question answering, overall and on closed or open questions."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["AnswerAccuracy"]

Subset = Literal["all", "closed", "open"]


class AnswerAccuracy(Metric):
    """Share of questions answered correctly, over ``all``, ``closed`` or ``open`` questions.

    ``update(logits (B, A), labels (B,), closed (B,) bool)``. A label of ``-1`` is an answer
    outside the answer vocabulary (seen only at test time): it counts as wrong, never dropped.
    ``compute`` is NaN when no question of the subset was seen. A Metric of sums (rather than
    ``MulticlassAccuracy``, whose ``ignore_index`` would drop unknown answers), so clients'
    states merge exactly.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, subset: Subset = "all", **kwargs) -> None:
        super().__init__(**kwargs)
        if subset not in ("all", "closed", "open"):
            raise ValueError(f"unknown subset {subset!r}; use 'all', 'closed' or 'open'")
        self.subset = subset
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor, closed: Tensor) -> None:
        labels = labels.reshape(-1)
        correct = (logits.argmax(dim=-1) == labels) & (labels >= 0)
        closed = closed.reshape(-1).bool()
        keep = {"all": torch.ones_like(closed), "closed": closed, "open": ~closed}[self.subset]
        self.correct += (correct & keep).sum()
        self.total += keep.sum()

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.tensor(float("nan"), device=self.total.device)
        return self.correct / self.total
