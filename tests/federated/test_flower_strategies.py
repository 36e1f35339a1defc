"""Our server optimizers and robust aggregators against Flower's own strategies
(``flwr.serverapp.strategy``, Flower 1.42): the same client updates over three rounds give the
same new weights, to float tolerance, with the hyperparameters set equal on both sides.

Flower is driven as its ``Strategy.start`` drives it: ``configure_train`` (which also records
the round's current arrays, for FedOpt and FedAvgM) and ``aggregate_train`` on the replies to
its instructions. Known differences, each made explicit below:

* FedAdam's bias correction: Flower uses ``t = server_round + 1`` with rounds counted from 1,
  so its first step is corrected as Kingma & Ba's second; ours uses ``t`` = the server's step
  count (1 first). Driving Flower with ``server_round = t - 1`` makes them equal; the test of
  Flower's own numbering shows the rate ratio is the only difference.
* Buffers (batch-norm statistics): ours give them the plain aggregate and step only
  parameters; Flower steps every array it receives.
* Krum: ours scores over floating tensors only and refuses rounds with fewer than
  ``byzantine + 3`` clients; Flower scores every array and then uses one neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as fl
from flwr.supercore.task_identity import TaskIdentity

from omnifm.federated import (
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    Krum,
    Median,
    Strategy,
    TrimmedMean,
)
from omnifm.federated.aggregators import Aggregator

State = dict[str, Tensor]
NUM_EXAMPLES = [10, 30, 20, 5, 15]  # unequal, so any weighting shows


class _Model(nn.Module):
    """Parameters ``w`` and ``b`` and a floating buffer ``stat``, as a task has."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4))
        self.b = nn.Parameter(torch.randn(4))
        self.register_buffer("stat", torch.randn(4))


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity Flower's ServerApp runtime sets before a strategy builds its messages
    (restored after the test)."""
    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


class _Grid:
    """The part of Flower's ``Grid`` that ``configure_train`` calls: the connected nodes."""

    def __init__(self, num_nodes: int) -> None:
        self.nodes = list(range(1, num_nodes + 1))

    def get_node_ids(self) -> Iterable[int]:
        return self.nodes


def client_states(current: State, rounds: int, n: int = len(NUM_EXAMPLES)) -> list[list[State]]:
    """Per round, ``n`` clients' states: ``current`` plus a client's own drift and noise (the
    drift is fixed across rounds, so momentum and moments build up)."""
    drifts = [{k: torch.randn_like(v) for k, v in current.items()} for _ in range(n)]
    return [
        [{k: v + d[k] + 0.1 * torch.randn_like(v) for k, v in current.items()} for d in drifts]
        for _ in range(rounds)
    ]


def flower_round(
    strategy: fl.FedAvg,
    server_round: int,
    current: State,
    states: list[State],
    num_examples: list[int] = NUM_EXAMPLES,
) -> State:
    """One round of a Flower strategy: instructions to the nodes, one reply per state with
    its example count."""
    instructions = strategy.configure_train(
        server_round, ArrayRecord(current), ConfigRecord(), _Grid(len(states))
    )
    replies = [
        Message(
            RecordDict({"arrays": ArrayRecord(s), "metrics": MetricRecord({"num-examples": n})}),
            reply_to=ins,
        )
        for ins, s, n in zip(instructions, states, num_examples, strict=True)
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return {k: v.float() for k, v in arrays.to_torch_state_dict().items()}


OPTIMIZERS = {
    "FedAvgM": (
        lambda: FedAvgM(lr=0.7, momentum=0.9),
        lambda: fl.FedAvgM(server_learning_rate=0.7, server_momentum=0.9),
    ),
    "FedAdam": (
        lambda: FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3),
        lambda: fl.FedAdam(eta=0.1, eta_l=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3),
    ),
    "FedYogi": (
        lambda: FedYogi(eta=0.05, beta_1=0.8, beta_2=0.95, tau=1e-2),
        lambda: fl.FedYogi(eta=0.05, eta_l=0.1, beta_1=0.8, beta_2=0.95, tau=1e-2),
    ),
    "FedAdagrad": (
        lambda: FedAdagrad(eta=0.1, tau=1e-3),
        lambda: fl.FedAdagrad(eta=0.1, eta_l=0.1, tau=1e-3),
    ),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_server_optimizers_match_flower_over_three_rounds(name: str) -> None:
    # Prepare: eta_l is Flower's client learning rate, unused by its server step
    ours, theirs = OPTIMIZERS[name][0](), OPTIMIZERS[name][1]()
    model = _Model()
    ours.bind(model)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rounds = client_states(start, rounds=3)
    mine, flower = dict(start), dict(start)
    for t, states in enumerate(rounds, start=1):
        # Execute: Flower's FedAdam corrects with server_round + 1, so it gets t - 1
        mine_before = mine
        mine = ours.aggregate(states, NUM_EXAMPLES, mine)
        flower = flower_round(theirs, t - 1 if name == "FedAdam" else t, flower, states)
        # Assert: the parameters took the same step; the buffer took the plain weighted mean
        for key in ("w", "b"):
            torch.testing.assert_close(mine[key], flower[key], msg=f"{name} round {t} {key}")
            assert not torch.allclose(mine[key], mine_before[key])
        mean = sum(n * s["stat"] for n, s in zip(NUM_EXAMPLES, states, strict=True))
        torch.testing.assert_close(mine["stat"], mean / sum(NUM_EXAMPLES))
        flower["stat"] = mine["stat"]  # Flower stepped it too: start both rounds alike
    assert ours.state_dict()["rounds"] == 3


def first_round(ours: Strategy, theirs: fl.Strategy) -> tuple[State, State, State]:
    """Both strategies' first round (Flower's numbering) from one start: (start, ours, Flower's)."""
    model = _Model()
    ours.bind(model)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (states,) = client_states(start, rounds=1)
    return (
        start,
        ours.aggregate(states, NUM_EXAMPLES, start),
        flower_round(theirs, 1, start, states),
    )


def test_fedadam_bias_correction_is_one_step_ahead_in_flower() -> None:
    # Prepare: Flower's own round numbering (server_round = 1 for the first round)
    b1, b2 = 0.9, 0.99
    ours = FedAdam(eta=0.1, beta_1=b1, beta_2=b2, tau=1e-3)
    theirs = fl.FedAdam(eta=0.1, beta_1=b1, beta_2=b2, tau=1e-3)
    # Execute
    start, mine, flower = first_round(ours, theirs)
    # Assert: same direction and moments, rates of t = 1 (ours) and t = 2 (Flower)

    def rate(t: int) -> float:
        return math.sqrt(1 - b2**t) / (1 - b1**t)

    for key in ("w", "b"):
        ratio = (flower[key] - start[key]) / (mine[key] - start[key])
        torch.testing.assert_close(ratio, torch.full_like(ratio, rate(2) / rate(1)))


def test_fedavgm_without_momentum_at_lr_one_is_the_weighted_mean_in_both() -> None:
    ours, theirs = FedAvgM(lr=1.0, momentum=0.0), fl.FedAvgM()  # Flower's defaults
    start, mine, flower = first_round(ours, theirs)
    for key in start:
        torch.testing.assert_close(mine[key], flower[key])


def _aggregators() -> dict[str, tuple[Aggregator, fl.FedAvg]]:
    return {
        "Median": (Median(), fl.FedMedian()),
        "TrimmedMean": (TrimmedMean(beta=0.2), fl.FedTrimmedAvg(beta=0.2)),
        "TrimmedMean-0.4": (TrimmedMean(beta=0.4), fl.FedTrimmedAvg(beta=0.4)),
        "Krum": (Krum(byzantine=1), fl.Krum(num_malicious_nodes=1)),
        "Krum-f2": (Krum(byzantine=2), fl.Krum(num_malicious_nodes=2)),
        "MultiKrum": (
            Krum(byzantine=1, keep=3),
            fl.MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3),
        ),
    }


@pytest.mark.parametrize("name", list(_aggregators()))
@pytest.mark.parametrize("hostile", [False, True])
def test_robust_aggregators_match_flower(name: str, hostile: bool) -> None:
    # Prepare: five clients of one round; with hostile, the last one sends 100x its weights
    ours, theirs = _aggregators()[name]
    start = {k: v.detach().clone() for k, v in _Model().state_dict().items()}
    draws = client_states(start, rounds=3)  # stateless rules: three draws, not three rounds
    for t, states in enumerate(draws, start=1):
        if hostile:
            states[-1] = {k: 100 * v for k, v in states[-1].items()}
        # Execute
        mine = ours(states, NUM_EXAMPLES)
        flower = flower_round(theirs, t, start, states)
        # Assert
        assert mine.keys() == flower.keys() == start.keys()
        for key in start:
            torch.testing.assert_close(mine[key], flower[key], msg=f"{name} draw {t} {key}")


@pytest.mark.parametrize("beta", [0.2, 0.4])
def test_median_and_trimmed_mean_of_an_even_count_match_flower(beta: float) -> None:
    # four clients: the median is the mean of the two middle values in both
    start = {k: v.detach().clone() for k, v in _Model().state_dict().items()}
    (states,) = client_states(start, rounds=1, n=4)
    pairs = [(Median(), fl.FedMedian()), (TrimmedMean(beta), fl.FedTrimmedAvg(beta=beta))]
    for ours, theirs in pairs:
        mine = ours(states, NUM_EXAMPLES[:4])
        flower = flower_round(theirs, 1, start, states, NUM_EXAMPLES[:4])
        for key in start:
            torch.testing.assert_close(mine[key], flower[key])


def test_krum_selects_the_same_client_in_both() -> None:
    # Prepare: the client closest to the crowd is unique, so the choice is the test
    ours, theirs = Krum(byzantine=1), fl.Krum(num_malicious_nodes=1)
    start = {"w": torch.zeros(6)}
    states = [{"w": start["w"] + c} for c in (0.0, 0.2, -0.2, 0.5, 9.0)]
    # Execute
    mine = ours(states, NUM_EXAMPLES)
    flower = flower_round(theirs, 1, start, states)
    # Assert: client 0, the one nearest its n - f - 2 = 2 nearest neighbours
    torch.testing.assert_close(mine["w"], states[0]["w"])
    torch.testing.assert_close(flower["w"], states[0]["w"])


def test_krum_refuses_too_few_clients_where_flower_uses_one_neighbour() -> None:
    # 5 clients, 3 faulty: n - f - 2 = 0 neighbours; Flower scores with max(1, 0) = 1
    values = (0.0, 0.1, -0.3, 0.5, 9.0)
    states = [{"w": torch.full((6,), c)} for c in values]
    with pytest.raises(ValueError, match="at least 6 clients"):
        Krum(byzantine=3)(states, NUM_EXAMPLES)
    flower = flower_round(fl.Krum(num_malicious_nodes=3), 1, states[0], states)
    assert flower["w"][0].item() in (pytest.approx(0.0), pytest.approx(0.1))  # the closest pair


def test_strategies_are_flowers_defaults() -> None:
    # our defaults are documented as Flower's; Flower's FedAvgM has momentum 0, ours 0.9
    pairs: list[tuple[Strategy, fl.FedOpt]] = [
        (FedAdam(), fl.FedAdam()),
        (FedYogi(), fl.FedYogi()),
        (FedAdagrad(), fl.FedAdagrad()),
    ]
    for ours, theirs in pairs:
        for attr in ("eta", "beta_1", "beta_2", "tau"):
            assert getattr(ours, attr) == getattr(theirs, attr), (type(ours).__name__, attr)
    assert TrimmedMean().beta == fl.FedTrimmedAvg().beta
