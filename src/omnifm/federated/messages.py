"""What a client and the server exchange: plain tensors, numbers and strings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

from torch import Tensor

__all__ = ["EvaluateRes", "FitIns", "FitRes", "Message"]


class Message:
    """A dataclass of tensors, numbers and strings that round-trips through a plain dict."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass
class FitIns(Message):
    """Server -> client: the round's shared weights, bank snapshot and settings."""

    round: int
    weights: dict[str, Tensor]
    seed: int
    bank: dict[str, Any] | None = None  # BankSnapshot.state_dict()
    prototypes: int = 8  # spectral prototypes to upload
    strategy: dict[str, Tensor] = field(default_factory=dict)  # Strategy.broadcast()


@dataclass
class FitRes(Message):
    """Client -> server: shared weights, example count, metrics, spectral upload, bank hits."""

    client: str
    modality: str
    num_examples: int
    weights: dict[str, Tensor]
    metrics: dict[str, float] = field(default_factory=dict)
    prototypes: Tensor | None = None  # (n, spectral_dim)
    hit_ids: Tensor | None = None  # bank entry ids retrieved during training
    hit_counts: Tensor | None = None  # how often each of hit_ids was retrieved
    strategy: dict[str, Tensor] = field(default_factory=dict)  # LocalRound.upload


@dataclass
class EvaluateRes(Message):
    """Client -> server: evaluation metrics of the current global model on local data."""

    client: str
    num_examples: int
    metrics: dict[str, float]
