"""Memory that must not grow with the number of clients. Streamed aggregation: the server folds
each client's result in as it arrives and holds one running aggregate, not a state per client.
It must give what aggregating the whole round at once gives (``Strategy.aggregate``, computed
with ``omnifm.functional``'s batch functions), for every strategy and aggregator, over rounds in
which server state evolves. And no client keeps its local Trainer (with its optimizer state)
after its round."""

from __future__ import annotations

import copy
import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from omnifm.federated import (
    FedAvg,
    Krum,
    Mean,
    Median,
    OmniFM,
    Strategy,
    TrimmedMean,
    strategies,
)
from omnifm.federated.aggregators import Aggregator, RunningSum
from omnifm.federated.messages import FitRes
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.server import Server
from omnifm.functional import weighted_average

from .helpers import capture_results, tiny_federation, tiny_task

NUM_EXAMPLES = [12, 40, 7, 25, 16]
# float tolerance: the streamed mean sums in float64, the batch one in float32 with known
# weights; the adaptive server optimizers divide by sqrt(v) + tau, which turns the last bits
# of a near-zero pseudo-gradient into differences up to about 2e-5 over three rounds
TOL = 1e-4


STRATEGIES = sorted(  # every strategy the library ships
    n
    for n in dir(strategies)
    if isinstance(c := getattr(strategies, n), type)
    and issubclass(c, Strategy)
    and not n.startswith("_")
    and c is not Strategy
)


def _strategy(name: str) -> Strategy:
    return getattr(strategies, name)()


def _round(
    model: torch.nn.Module, strategy: Strategy, shared: dict[str, Tensor], seed: int
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Five clients' shared states (moved from ``shared``) and SCAFFOLD-like uploads."""
    g = torch.Generator().manual_seed(seed)
    trainable = {n for n, p in model.named_parameters()}
    states, uploads = [], []
    for i in range(len(NUM_EXAMPLES)):
        states.append(
            {
                k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + i
                for k, v in shared.items()
            }
        )
        uploads.append(
            {k: torch.randn(shared[k].shape, generator=g) for k in trainable & set(shared)}
        )
    uploads[2] = {}  # a client without local steps sends no upload
    return states, uploads


ROBUST = [Median(), TrimmedMean(0.2), Krum(1, keep=2)]


@pytest.mark.parametrize(
    ("name", "aggregator"),
    [(n, None) for n in STRATEGIES] + [(n, a) for n in ("FedAvg", "SCAFFOLD") for a in ROBUST],
)
def test_streamed_rounds_equal_batch_rounds(name: str, aggregator: Aggregator | None) -> None:
    # Prepare: two copies of the strategy bound to the same model and state
    torch.manual_seed(0)
    model = tiny_task()
    batch = _strategy(name)
    batch.bind(model, num_clients=8)
    streamed = copy.deepcopy(batch)
    personal = batch.personal_keys(model)
    shared = {k: v.clone() for k, v in model.state_dict().items() if k not in personal}
    shared_b, shared_s = shared, dict(shared)
    for seed in range(3):  # rounds: server state (moments, c, h) carries over
        states, uploads = _round(model, batch, shared_b, seed)
        # Execute
        shared_b = batch.aggregate(states, NUM_EXAMPLES, shared_b, aggregator, uploads)
        folding = streamed.start(shared_s, aggregator)
        for state, n, upload in zip(states, NUM_EXAMPLES, uploads, strict=True):
            folding.add(state, n, upload)
        shared_s = streamed.finish(folding)
        # Assert
        assert shared_s.keys() == shared_b.keys()
        for k in shared_b:
            assert shared_s[k].dtype == shared_b[k].dtype, k
            torch.testing.assert_close(shared_s[k], shared_b[k], rtol=TOL, atol=TOL)
    for key, value in batch.state_dict().items():  # the server state too
        other = streamed.state_dict()[key]
        if isinstance(value, dict):
            for k in value:
                torch.testing.assert_close(other[k], value[k], rtol=TOL, atol=TOL)
        else:
            assert other == value


def test_running_sum_equals_weighted_average_and_checks_keys() -> None:
    states = [{"w": torch.randn(3, 2), "n": torch.tensor(i)} for i in range(4)]
    running = RunningSum()
    for state, weight in zip(states, [1.0, 5.0, 2.0, 0.5], strict=True):
        running.add(state, weight)
    expected = weighted_average(states, [1.0, 5.0, 2.0, 0.5])
    torch.testing.assert_close(running.result(), expected)
    assert running.result()["n"].dtype == torch.int64
    with pytest.raises(ValueError, match="keys"):
        running.add({"v": torch.zeros(1)}, 1.0)


def _server(aggregator: Aggregator | None, clients: int, limit: int | None = None) -> Server:
    names = [f"site{i}" for i in range(clients)]
    sampler = ClientSampler(names, fraction=0.5, seed=0)
    return Server(
        tiny_task(stack=False), FedAvg(), sampler, aggregator=aggregator, aggregation_memory=limit
    )


def test_the_server_holds_one_running_sum_and_releases_each_result() -> None:
    # Prepare
    server = _server(None, 6)
    shared = server.shared
    results = [
        FitRes(f"site{i}", "ct", n, {k: v + i for k, v in shared.items()})
        for i, n in enumerate(NUM_EXAMPLES)
    ]
    expected = weighted_average(
        [dict(r.weights) for r in results], [float(n) for n in NUM_EXAMPLES]
    )
    # Execute
    received = server.begin(1)
    for r in results:
        received.add(r)
    # Assert: every result's tensors released, one float64 sum held
    assert all(not r.weights for r in results) and len(received) == len(results)
    (folded,) = received.scopes.values()
    assert folded.clients == len(results)
    server.finish(received)
    for k, v in expected.items():
        torch.testing.assert_close(server.shared[k], v)


def test_a_robust_aggregator_past_its_memory_limit_is_refused_before_round_1() -> None:
    server = _server(Median(), 40)
    per_client = sum(v.nbytes for v in server.shared.values())
    assert server.aggregation_bytes() == {"*": 20 * per_client}  # half of 40 sampled
    assert _server(None, 40).aggregation_bytes() == {"*": 2 * per_client}  # streamed
    with pytest.raises(
        ValueError,
        match=r"20 clients a round need 29 MiB, above federation.aggregation_memory \(14 MiB\)",
    ):
        _server(Median(), 40, limit=10 * per_client)
    _server(Mean(), 40, limit=0)  # the mean streams: within any limit


def test_flower_replies_are_folded_in_sampling_order() -> None:
    pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")
    from omnifm.federated.flower.serverapp import _in_order

    pulled: list[int] = []

    def arrivals() -> Iterator[tuple[int, str]]:
        for i in (2, 0, 1, 4):  # client 3 never replies
            pulled.append(i)
            yield i, f"reply {i}"

    ordered = _in_order(arrivals(), 5)  # type: ignore[arg-type]
    assert next(ordered) == "reply 0" and pulled == [2, 0]  # held 2, no more than needed
    assert list(ordered) == ["reply 1", "reply 2", None, "reply 4"]


def test_a_streamed_federation_round_equals_its_batch_aggregate(tmp_path: Path) -> None:
    run = tiny_federation(tmp_path, FedAvg(), rounds=1)
    sent = capture_results(run)
    start = {k: v.clone() for k, v in run.server.shared.items()}
    run.start()
    run.fit_round(1)
    expected = FedAvg().aggregate([r.weights for r in sent], [r.num_examples for r in sent], start)
    for k, v in expected.items():
        torch.testing.assert_close(run.server.shared[k], v)


def test_a_strategy_that_overrides_the_old_aggregate_is_told_to_override_finish() -> None:
    class Old(FedAvg):
        def aggregate(self, states, num_examples, current, aggregator=None, uploads=()):
            return current

    sampler = ClientSampler(["a", "b"])
    with pytest.raises(TypeError, match=r"Override finish\(round\)"):
        Server(tiny_task(stack=False), Old(), sampler)


def test_no_client_keeps_its_trainer_or_optimizer_after_its_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Lightning points the model and the datamodule at the Trainer that ran them; each client
    # kept its last Trainer, and with it the optimizer state: 90 MB per client for ResNet-18
    caplog.set_level(logging.INFO, "omnifm")
    run = tiny_federation(tmp_path, OmniFM(), rounds=2)
    run.fit()  # local fits, validation and test of every client
    assert "aggregation: Mean(), streamed:" in caplog.text  # what a round holds, said up front
    gc.collect()
    model = set(map(id, run.model.parameters()))
    optimizers = [
        o
        for o in gc.get_objects()
        if isinstance(o, torch.optim.Optimizer)
        and any(id(p) in model for g in o.param_groups for p in g["params"])
    ]
    assert not optimizers
    assert all(c.datamodule.trainer is None for c in run.clients.values())
