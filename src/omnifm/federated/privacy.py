"""What each client has spent of its privacy budget on spectral uploads.

A client's uploads are Gaussian releases (``omnifm.functional.private_centroids``); Opacus'
RDP accountant turns the list of them into the ``(epsilon, delta)`` the client has spent. The
server keeps that list per client (plain numbers, in every checkpoint, so a resumed run keeps
counting) and asks a client for prototypes only while one more release stays within its
budget."""

from __future__ import annotations

from typing import Any

from omnifm.federated.config import PrototypePrivacy
from omnifm.functional import PROTOTYPE_SENSITIVITY

__all__ = ["PrivacyLedger"]


class PrivacyLedger:
    """Per client, the Gaussian releases it made and the epsilon they spent (at ``delta``)."""

    def __init__(self, privacy: PrototypePrivacy) -> None:
        self.privacy = privacy
        self.releases: dict[str, int] = {}
        first = self.epsilon("", 1)
        if first > privacy.epsilon:
            raise ValueError(
                f"federation.bank.privacy: one upload at noise_multiplier "
                f"{privacy.noise_multiplier} spends epsilon {first:.2f}, more than the budget "
                f"epsilon {privacy.epsilon}; raise noise_multiplier or epsilon"
            )

    def epsilon(self, client: str, releases: int | None = None) -> float:
        """Epsilon ``client`` has spent (after ``releases`` uploads instead, where given)."""
        n = self.releases.get(client, 0) if releases is None else releases
        if n == 0:
            return 0.0
        # imported here: importing opacus calls logging.basicConfig, which would leave the
        # CLI's and the ServerApp's own logging setup without effect (and their INFO lines)
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        # each upload uses every token the client computes (no sampling amplification claimed)
        step = (self.privacy.noise_multiplier / PROTOTYPE_SENSITIVITY, 1.0, n)
        accountant.history = [step]
        return float(accountant.get_epsilon(self.privacy.delta))

    def allows(self, client: str) -> bool:
        """Whether one more upload keeps ``client`` within its budget."""
        return self.epsilon(client, self.releases.get(client, 0) + 1) <= self.privacy.epsilon

    def record(self, client: str) -> None:
        """``client`` uploaded once more."""
        self.releases[client] = self.releases.get(client, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        return {"releases": dict(self.releases)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.releases = {str(k): int(v) for k, v in state.get("releases", {}).items()}
