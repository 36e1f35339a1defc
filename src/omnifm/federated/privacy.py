"""What each client has spent of its privacy budgets: on spectral uploads and on training.

A client's uploads are Gaussian releases (``omnifm.functional.private_centroids``) and its
DP-SGD steps subsampled Gaussian ones (``omnifm.federated.dpsgd``); Opacus' RDP accountant
turns the list of them into the ``(epsilon, delta)`` the client has spent. The server keeps
those lists per client (plain numbers, in every checkpoint, so a resumed run keeps counting),
asks a client for prototypes only while one more upload stays within its budget, and samples
it for training only while one more round like its last does."""

from __future__ import annotations

from typing import Any

from omnifm.federated.config import PrototypePrivacy, TrainingPrivacy
from omnifm.functional import PROTOTYPE_SENSITIVITY

__all__ = ["PrivacyLedger", "rdp_epsilon"]

Step = tuple[float, float, int]  # Opacus' accountant history: noise multiplier, rate, steps


def rdp_epsilon(history: list[Step], delta: float) -> float:
    """Epsilon at ``delta`` of a list of (subsampled) Gaussian mechanisms, by Opacus' RDP
    accountant; 0 for none."""
    if not any(steps for _, _, steps in history):
        return 0.0
    # imported here: importing opacus calls logging.basicConfig, which would leave the
    # CLI's and the ServerApp's own logging setup without effect (and their INFO lines)
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta))


class PrivacyLedger:
    """Per client, the spectral uploads it made and the DP-SGD steps it took, and the epsilon
    each spent (at its ``delta``); ``uploads``/``training``: the recipe's budgets (none: that
    control is off)."""

    def __init__(
        self, uploads: PrototypePrivacy | None = None, training: TrainingPrivacy | None = None
    ) -> None:
        self.privacy = uploads
        self.training = training
        self.releases: dict[str, int] = {}
        self.trained: dict[str, list[Step]] = {}
        if uploads is not None and self.epsilon("", 1) > uploads.epsilon:
            raise ValueError(
                f"federation.bank.privacy: one upload at noise_multiplier "
                f"{uploads.noise_multiplier} spends epsilon {self.epsilon('', 1):.2f}, more "
                f"than the budget epsilon {uploads.epsilon}; raise noise_multiplier or epsilon"
            )

    # spectral uploads ------------------------------------------------------------------------
    def epsilon(self, client: str, releases: int | None = None) -> float:
        """Epsilon ``client`` has spent on uploads (after ``releases`` uploads instead)."""
        if self.privacy is None:
            return 0.0
        n = self.releases.get(client, 0) if releases is None else releases
        # each upload uses every token the client computes (no sampling amplification claimed)
        step = (self.privacy.noise_multiplier / PROTOTYPE_SENSITIVITY, 1.0, n)
        return rdp_epsilon([step], self.privacy.delta)

    def allows(self, client: str) -> bool:
        """Whether one more upload keeps ``client`` within its budget."""
        if self.privacy is None:
            return True
        return self.epsilon(client, self.releases.get(client, 0) + 1) <= self.privacy.epsilon

    def record(self, client: str) -> None:
        """``client`` uploaded once more."""
        if self.privacy is not None:
            self.releases[client] = self.releases.get(client, 0) + 1

    # training --------------------------------------------------------------------------------
    def training_epsilon(self, client: str, more: int = 0) -> float:
        """Epsilon ``client`` has spent on DP-SGD (after ``more`` rounds like its last)."""
        history = self.trained.get(client, [])
        if self.training is None or not history:
            return 0.0
        return rdp_epsilon(history + history[-1:] * more, self.training.delta)

    def may_train(self, client: str) -> bool:
        """Whether one more round like ``client``'s last keeps it within its budget (a client
        that has not trained yet may: its cost is known once it has)."""
        if self.training is None:
            return True
        return self.training_epsilon(client, more=1) <= self.training.epsilon

    def record_training(self, client: str, metrics: dict[str, float]) -> None:
        """A round of ``client``'s, from what its fit reported (``privacy/dp_steps``, the
        sample rate and the noise multiplier it trained with)."""
        if self.training is not None and "privacy/dp_steps" in metrics:
            step = (
                metrics["privacy/noise_multiplier"],
                metrics["privacy/sample_rate"],
                int(metrics["privacy/dp_steps"]),
            )
            self.trained.setdefault(client, []).append(step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "releases": dict(self.releases),
            "trained": {c: [list(s) for s in h] for c, h in self.trained.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.releases = {str(k): int(v) for k, v in state.get("releases", {}).items()}
        self.trained = {
            str(c): [(float(s), float(q), int(n)) for s, q, n in h]
            for c, h in state.get("trained", {}).items()
        }
