"""GPFL's blocks (Zhang et al. 2023): a conditional valve that turns a feature into a global or
a personalised one, and global category embeddings that guide the global features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConditionalValve", "GlobalGuidance"]


class ConditionalValve(nn.Module):
    """CoV: ``relu((gamma(c) + 1) * f + beta(c))``, ``gamma`` and ``beta`` small networks of the
    conditional input ``c`` (``Linear -> ReLU -> LayerNorm``, as in the paper's code)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.LayerNorm(dim))
        self.beta = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.LayerNorm(dim))

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        return torch.relu(features * (self.gamma(condition) + 1) + self.beta(condition))


class GlobalGuidance(nn.Module):
    """What GPFL adds to a classifier: the CoV, the global category embeddings (GCE, one
    vector per class) and the client's personalised conditional input (a buffer, personal)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.valve = ConditionalValve(dim)
        self.categories = nn.Embedding(num_classes, dim)
        self.register_buffer("personal_input", torch.zeros(dim))

    def personalise(self, features: Tensor) -> Tensor:
        """The head's input: the features through the valve with the personal condition."""
        return self.valve(features, self.personal_input)

    def conditions(self, class_frequency: Tensor) -> tuple[Tensor, Tensor]:
        """The generic (mean embedding) and personalised (embeddings weighted by the client's
        class frequencies) conditional inputs, detached, as the round starts."""
        embeddings = self.categories.weight.detach()
        return embeddings.mean(dim=0), class_frequency.to(embeddings) @ embeddings
