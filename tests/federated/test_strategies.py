import pytest
import torch
from torch import nn

from omnifm.federated import FedAvg, FedBN, FedPer, FedProx, OmniFM
from omnifm.functional import kmeans, weighted_average

from .helpers import tiny_task


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
    term = FedProx(mu=0.5).client_loss(shared)
    assert term is not None and term(model).item() == 0.0
    with torch.no_grad():
        model.head.bias.add_(2.0)  # 4 classes: ||delta||^2 = 4 * 4 = 16
    torch.testing.assert_close(term(model), torch.tensor(0.25 * 16.0))
    assert FedAvg().client_loss(shared) is None


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
