"""Seeded partial participation."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ClientSampler"]


class ClientSampler:
    """Pick ``round(fraction * N)`` clients (at least ``min_clients``) per round.

    Round ``r``'s choice depends only on ``(seed, r)``, so a resumed run samples exactly what
    an uninterrupted one would.
    """

    def __init__(
        self, clients: list[str], fraction: float = 1.0, seed: int = 0, min_clients: int = 1
    ) -> None:
        if not clients:
            raise ValueError("the federation has no clients")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"participation fraction must be in (0, 1], got {fraction}")
        if min_clients > len(clients):
            raise ValueError(
                f"min_clients={min_clients} but the federation has only {len(clients)} clients"
            )
        self.clients = list(clients)
        self.fraction = float(fraction)  # plain numbers: the state loads with weights_only
        self.seed = int(seed)
        self.min_clients = int(min_clients)
        self.history: list[list[str]] = []

    @property
    def per_round(self) -> int:
        n = round(self.fraction * len(self.clients))
        return min(len(self.clients), max(1, self.min_clients, n))

    def sample(self, round_: int) -> list[str]:
        rng = np.random.default_rng([self.seed, round_])
        picked = np.sort(rng.choice(len(self.clients), self.per_round, replace=False))
        chosen = [self.clients[i] for i in picked]
        self.history.append(chosen)
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "fraction": self.fraction, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [list(h) for h in state["history"]]
