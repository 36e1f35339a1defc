from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from omnifm.federated import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBN,
    FedPer,
    FedProx,
    FedYogi,
    LocalRound,
    OmniFM,
    Strategy,
)
from omnifm.functional import kmeans, weighted_average
from omnifm.tasks.hooks import LossTerm

from .helpers import tiny_federation, tiny_task


def test_weighted_average_is_example_weighted() -> None:
    # Prepare
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)},
        {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(6)},
    ]
    # Execute
    out = FedAvg().aggregate(states, [1, 3], current={})
    # Assert
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].dtype == torch.long and out["n"].item() == 5  # 3*0.25 + 6*0.75 rounded


def test_weighted_average_rejects_mismatched_states() -> None:
    with pytest.raises(ValueError, match="keys"):
        weighted_average([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        weighted_average([{"a": torch.zeros(1)}], [0])


def test_fedprox_term_is_half_mu_squared_distance() -> None:
    model = tiny_task(stack=False)
    shared = {k: v.clone() for k, v in model.state_dict().items()}
    (term,) = FedProx(mu=0.5).client_callbacks(LocalRound(model, shared))
    assert isinstance(term, LossTerm) and term.name == "client_term"
    _, out = model(batch := {"image": torch.rand(2, 1, 16, 16)})
    assert term.loss_term(model, batch, out).item() == 0.0
    with torch.no_grad():
        model.head.bias.add_(2.0)  # 4 classes: ||delta||^2 = 4 * 4 = 16
    torch.testing.assert_close(term.loss_term(model, batch, out), torch.tensor(0.25 * 16.0))
    assert FedAvg().client_callbacks(LocalRound(model, shared)) == []


def test_personal_keys_of_each_strategy() -> None:
    model = tiny_task()
    head = {"head.weight", "head.bias"}
    assert FedAvg().personal_keys(model) == set() == FedProx().personal_keys(model)
    assert FedPer().personal_keys(model) == head
    assert OmniFM().personal_keys(model) == head | {"stack.psp.suffix"}
    bn = FedBN().personal_keys(model)
    modules = dict(model.named_modules())
    assert bn and all(isinstance(modules[k.rsplit(".", 1)[0]], nn.BatchNorm2d) for k in bn)
    assert any(k.endswith("running_mean") for k in bn) and head.isdisjoint(bn)
    with pytest.raises(ValueError, match="stack: null"):
        OmniFM().personal_keys(tiny_task(stack=False))


def test_kmeans_finds_separated_clusters() -> None:
    centres = torch.eye(3)
    x = centres.repeat_interleave(10, dim=0) + 0.01 * torch.randn(30, 3)
    found = kmeans(x, 3, seed=1)
    assert found.shape == (3, 3)
    assert sorted((found @ centres.T).argmax(dim=1).tolist()) == [0, 1, 2]
    assert kmeans(x[:2], 5).shape == (2, 3)


class _HeadGradientsDropped(Callback):
    """A gradient hook: the head's gradients are dropped before every optimizer step."""

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, _: Any):
        for p in pl_module.head.parameters():
            p.grad = None  # AdamW leaves a parameter without a gradient as it is


class _LossProbe(Callback):
    """A loss term: zero, but counted, so the test sees the task call it every step."""

    name = "probe"

    def __init__(self) -> None:
        self.calls = 0

    def loss_term(self, task: LightningModule, batch: Any, out: Any) -> Tensor:
        self.calls += 1
        return torch.zeros((), device=task.device)


class _FrozenHeads(FedAvg):
    """A strategy written outside omnifm: only ``client_callbacks``, nothing in the client,
    server or round loop."""

    def __init__(self) -> None:
        self.probe = _LossProbe()

    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        return [_HeadGradientsDropped(), self.probe]


def test_a_new_strategy_changes_local_training_through_callbacks_only(tmp_path: Path) -> None:
    # Prepare
    strategy = _FrozenHeads()
    run = tiny_federation(tmp_path, strategy, rounds=1, stack=False)
    before = {k: v.clone() for k, v in run.server.shared.items()}
    # Execute
    run.fit()
    # Assert: the head never moved (up to the rounding of averaging), the encoder did, and the
    # loss term ran at every step
    after = run.server.shared
    torch.testing.assert_close(after["head.weight"], before["head.weight"], rtol=0, atol=1e-6)
    moved = [k for k in before if k.startswith("encoder.") and not torch.equal(before[k], after[k])]
    assert moved
    assert strategy.probe.calls == 3 * 2  # 3 clients x max_steps=2


def plus_one(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize("strategy", [FedAvgM(), FedAdam(), FedYogi(), FedAdagrad()])
def test_server_optimizers_step_parameters_and_keep_their_state(strategy: Strategy) -> None:
    # Prepare: two rounds in which both clients moved every tensor by +1
    model = tiny_task()
    strategy.bind(model)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute
    current = strategy.aggregate([plus_one(first)] * 2, [1, 1], first)
    moved = plus_one(current)
    new = strategy.aggregate([moved, moved], [1, 1], current)
    # Assert: parameters took the server step, buffers (batch-norm statistics) the average
    weight, stat = "head.weight", next(k for k in current if k.endswith("running_mean"))
    step = new[weight] - current[weight]
    assert torch.all(step > 0) and not torch.allclose(step, torch.ones_like(step))
    torch.testing.assert_close(new[stat], moved[stat])
    assert strategy.state_dict()["rounds"] == 2 and "head.weight" in repr(strategy.state_dict())
    assert "rounds" not in repr(strategy)  # repr shows hyperparameters, not state
