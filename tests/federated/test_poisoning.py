"""Model poisoning in a federation: one of five clients returns corrupted shared weights (100x
its own, or Gaussian noise). The example-weighted mean follows it far from where the clean run
ends; the robust aggregators (``federation.aggregator``) stay close to it.

"Close" is the relative L2 distance over the floating tensors of ``server.shared`` after two
rounds, ``||poisoned - clean|| / ||clean||``, against the same federation, aggregator and
seeds without the attack.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from omnifm.federated import (
    Aggregator,
    FedAvg,
    Federation,
    FitRes,
    Krum,
    Mean,
    Median,
    TrimmedMean,
)
from omnifm.federated.trainer import quiet_lightning

from .helpers import tiny_data, tiny_federation

MODALITIES = ("ct", "mri", "xray", "ultrasound", "pathology")
HOSTILE = "xray"
ROUNDS = 2

Attack = Callable[[Tensor], Tensor]


def scaled(v: Tensor) -> Tensor:
    return 100 * v


def noise(v: Tensor) -> Tensor:
    return torch.randn(v.shape, dtype=v.dtype)  # seeded: the client's fit seeds every round


ATTACKS: dict[str, Attack] = {"scaled": scaled, "noise": noise}
AGGREGATORS: dict[str, Callable[[], Aggregator]] = {
    "Mean": Mean,
    "Median": Median,
    "TrimmedMean": lambda: TrimmedMean(beta=0.2),  # floor(0.2 * 5) = 1 cut at each end
    "Krum": lambda: Krum(byzantine=1),
}


def poison(federation: Federation, name: str, attack: Attack) -> None:
    """Client ``name`` trains as usual, then returns ``attack`` of its floating weights."""
    client = federation.clients[name]
    fit = client.fit

    def hostile_fit(*args: Any, **kwargs: Any) -> FitRes:
        res = fit(*args, **kwargs)
        res.weights = {k: attack(v) if v.is_floating_point() else v for k, v in res.weights.items()}
        return res

    client.fit = hostile_fit  # type: ignore[method-assign]


def run(tmp_path: Path, aggregator: str, attack: str | None) -> dict[str, Tensor]:
    """The shared state after ``ROUNDS`` rounds of FedAvg over five phantom clients."""
    federation = tiny_federation(
        tmp_path / f"{aggregator}-{attack}",
        FedAvg(),
        rounds=ROUNDS,
        stack=False,
        aggregator=AGGREGATORS[aggregator](),
        data=tiny_data(MODALITIES, n=16),
    )
    if attack is not None:
        poison(federation, HOSTILE, ATTACKS[attack])
    with quiet_lightning():
        federation.start()
        for round_ in range(1, ROUNDS + 1):
            federation.fit_round(round_)
    return federation.server.shared


def distance(state: dict[str, Tensor], reference: dict[str, Tensor]) -> float:
    """``||state - reference|| / ||reference||`` over the floating tensors."""
    keys = [k for k, v in reference.items() if v.is_floating_point()]
    diff = sum((state[k].double() - reference[k].double()).pow(2).sum() for k in keys)
    norm = sum(reference[k].double().pow(2).sum() for k in keys)
    return float((diff / norm).sqrt())


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Tensor]]:
    """The clean run of every aggregator, computed once for the module."""
    root = tmp_path_factory.mktemp("clean")
    return {name: run(root, name, None) for name in AGGREGATORS}


# Measured distances to the clean run of the same aggregator (2 rounds, max_steps 2):
#   scaled: Mean 2.79e5, Median 0.0351, TrimmedMean 0.0265, Krum 0 (the same honest client)
#   noise:  Mean 2.81,   Median 0.0210, TrimmedMean 0.0192, Krum 0
# For scale: the clean runs end 0.19 from the initial weights (mostly batch-norm statistics)
# and up to 0.039 from each other (clean Krum against clean Mean), so the robust rules stay
# within the spread of honest aggregates while the mean is thrown off by 2.8 or more.
FAR, NEAR = 1.0, 0.1


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
def test_one_poisoned_client_moves_the_mean_but_not_robust_aggregators(
    clean: dict[str, dict[str, Tensor]], tmp_path: Path, aggregator: str, attack: str
) -> None:
    # Execute
    poisoned = run(tmp_path, aggregator, attack)
    # Assert
    d = distance(poisoned, clean[aggregator])
    if aggregator == "Mean":
        assert d > FAR, f"the mean should follow the poisoned client, moved only {d:.3g}"
    else:
        assert d < NEAR, f"{aggregator} moved {d:.3g} from the clean run under {attack}"
