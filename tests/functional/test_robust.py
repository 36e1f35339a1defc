"""Robust aggregation rules and server optimizers, against hand computations and torch."""

import pytest
import torch

from omnifm.functional import (
    adaptive_step,
    coordinate_median,
    krum_select,
    momentum_step,
    trimmed_mean,
)


def states(values: list[float]) -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.tensor([v, -v]), "n": torch.tensor(int(v))} for v in values]


def test_median_and_trimmed_mean_ignore_one_hostile_client() -> None:
    honest = [1.0, 2.0, 3.0, 4.0]
    hostile = states([*honest, 1e6])
    torch.testing.assert_close(coordinate_median(hostile)["w"], torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(coordinate_median(states(honest))["w"], torch.tensor([2.5, -2.5]))
    torch.testing.assert_close(trimmed_mean(hostile, 0.2)["w"], torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(trimmed_mean(hostile, 0.0)["w"][0], torch.tensor(200002.0))
    assert coordinate_median(hostile)["n"].dtype == torch.long
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean(hostile, 0.5)


def test_krum_picks_the_clients_in_the_crowd() -> None:
    crowd = states([1.0, 1.1, 0.9, 1.05, 50.0, -40.0])
    assert set(krum_select(crowd, byzantine=2, keep=3)) == {0, 1, 3}
    assert krum_select(crowd, byzantine=2)[0] in {0, 3}
    with pytest.raises(ValueError, match="at least 5 clients"):
        krum_select(crowd[:4], byzantine=2)


def test_fedavgm_step_is_torch_sgd_with_momentum_on_the_pseudo_gradient() -> None:
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    sgd = torch.optim.SGD([x], lr=0.5, momentum=0.9)
    current, velocity = {"w": x.detach().clone()}, None
    for averaged in (torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.0])):
        x.grad = x.detach() - averaged  # the pseudo-gradient: the clients' move, negated
        sgd.step()
        current, velocity = momentum_step(current, {"w": averaged}, velocity, 0.5, 0.9)
        torch.testing.assert_close(current["w"], x.detach())


def test_adaptive_steps_follow_reddi_et_al() -> None:
    x, delta = torch.tensor([1.0]), torch.tensor([0.5])
    averaged = {"w": x + delta}
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    new, (m, v) = adaptive_step({"w": x}, averaged, None, 1, "adam", eta, b1, b2, tau)
    m1, v1 = (1 - b1) * delta, (1 - b2) * delta**2
    rate = eta * (1 - b2) ** 0.5 / (1 - b1)
    torch.testing.assert_close(new["w"], x + rate * m1 / (v1.sqrt() + tau))
    _, (_, v_yogi) = adaptive_step({"w": x}, averaged, (m, v), 2, "yogi", eta, b1, b2, tau)
    square = delta**2
    torch.testing.assert_close(v_yogi["w"], v1 - (1 - b2) * square * torch.sign(v1 - square))
    _, (_, v_ada) = adaptive_step({"w": x}, averaged, (m, v), 2, "adagrad", eta, 0.0, 0.0, tau)
    torch.testing.assert_close(v_ada["w"], v1 + square)
