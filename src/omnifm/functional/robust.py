"""Robust aggregation of clients' shared states, and the server optimizers of adaptive
federated optimization: pure functions over state dicts, as the strategies use them.

Robust rules follow their papers and Flower's strategies (``FedMedian``, ``FedTrimmedAvg``,
``Krum``/``MultiKrum``): the coordinate-wise median (Yin et al. 2018), the coordinate-wise
mean without the ``beta`` largest and smallest shares (Yin et al. 2018), and (Multi-)Krum
(Blanchard et al. 2017). The server steps are FedAvgM (Hsu et al. 2019) and FedAdam / FedYogi
/ FedAdagrad (Reddi et al. 2021), on the pseudo-gradient ``mean(client states) - current``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "adaptive_step",
    "coordinate_median",
    "krum_select",
    "momentum_step",
    "trimmed_mean",
]

State = Mapping[str, Tensor]


def _stacked(states: Sequence[State], key: str) -> Tensor:
    ref = states[0][key]
    dtype = torch.promote_types(ref.dtype, torch.float32) if ref.is_floating_point() else None
    return torch.stack([s[key].to(dtype or torch.float64) for s in states])


def _cast(value: Tensor, ref: Tensor) -> Tensor:
    return (value if ref.is_floating_point() else value.round()).to(ref.dtype)


def coordinate_median(states: Sequence[State]) -> dict[str, Tensor]:
    """Coordinate-wise median of state dicts with equal keys (the mean of the two middle
    values for an even count, as numpy's median and Flower's ``FedMedian``)."""
    if not states:
        raise ValueError("coordinate_median needs at least one state")
    out = {}
    for key, ref in states[0].items():
        values = _stacked(states, key).sort(dim=0).values
        n = len(states)
        middle = (values[(n - 1) // 2] + values[n // 2]) / 2
        out[key] = _cast(middle, ref)
    return out


def trimmed_mean(states: Sequence[State], beta: float) -> dict[str, Tensor]:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` largest and smallest values
    (scipy's ``trim_mean``; Flower's ``FedTrimmedAvg``)."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trimmed mean needs 0 <= beta < 0.5, got {beta}")
    if not states:
        raise ValueError("trimmed_mean needs at least one state")
    cut = math.floor(beta * len(states))
    out = {}
    for key, ref in states[0].items():
        values = _stacked(states, key).sort(dim=0).values
        out[key] = _cast(values[cut : len(states) - cut].mean(dim=0), ref)
    return out


def krum_select(states: Sequence[State], byzantine: int, keep: int = 1) -> list[int]:
    """Indices of the ``keep`` states with the smallest Krum score: the sum of squared
    distances (over floating tensors) to their ``n - byzantine - 2`` nearest other states.
    Krum keeps 1; Multi-Krum keeps more and averages them."""
    n = len(states)
    if byzantine < 0 or keep < 1 or keep > n:
        raise ValueError(f"Krum needs byzantine >= 0 and 1 <= keep <= {n}, got {byzantine}, {keep}")
    if n - byzantine - 2 < 1:
        raise ValueError(
            f"Krum with {byzantine} faulty clients needs at least {byzantine + 3} clients a "
            f"round, got {n}; lower byzantine or sample more clients"
        )
    keys = [k for k, v in states[0].items() if v.is_floating_point()]
    flat = torch.stack([torch.cat([s[k].double().reshape(-1) for k in keys]) for s in states])
    distances = torch.cdist(flat, flat).pow(2)
    nearest = distances.sort(dim=1).values[:, 1 : n - byzantine - 1]  # skip the self-distance
    return nearest.sum(dim=1).argsort()[:keep].tolist()


def momentum_step(
    current: State,
    averaged: State,
    momentum: dict[str, Tensor] | None,
    lr: float,
    beta: float,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """FedAvgM: ``v = beta * v + (current - averaged)``; ``x = current - lr * v`` (the first
    round starts ``v`` at the pseudo-gradient, as torch's SGD and Flower do). Returns the new
    state and ``v``."""
    new, velocity = {}, {}
    for key, x in current.items():
        grad = x - averaged[key]
        v = grad if momentum is None else beta * momentum[key] + grad
        velocity[key] = v
        new[key] = x - lr * v
    return new, velocity


def adaptive_step(
    current: State,
    averaged: State,
    moments: tuple[dict[str, Tensor], dict[str, Tensor]] | None,
    step: int,
    rule: Literal["adam", "yogi", "adagrad"],
    eta: float,
    beta_1: float,
    beta_2: float,
    tau: float,
) -> tuple[dict[str, Tensor], tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """One server step of adaptive federated optimization on ``delta = averaged - current``:
    ``m = beta_1 m + (1 - beta_1) delta``; ``v`` by Adam (``beta_2 v + (1 - beta_2) delta^2``),
    Yogi (``v - (1 - beta_2) delta^2 sign(v - delta^2)``) or Adagrad (``v + delta^2``);
    ``x = current + eta m / (sqrt(v) + tau)``. Adam's rate is bias-corrected with ``step``
    (1 for the first round; Kingma & Ba). Returns the new state and ``(m, v)``."""
    m_old, v_old = moments if moments is not None else ({}, {})
    new, m_new, v_new = {}, {}, {}
    rate = eta
    if rule == "adam":
        rate = eta * math.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    for key, x in current.items():
        delta = averaged[key] - x
        m = beta_1 * m_old.get(key, torch.zeros_like(delta)) + (1 - beta_1) * delta
        v = v_old.get(key, torch.zeros_like(delta))
        square = delta.pow(2)
        if rule == "adam":
            v = beta_2 * v + (1 - beta_2) * square
        elif rule == "yogi":
            v = v - (1 - beta_2) * square * torch.sign(v - square)
        else:
            v = v + square
        m_new[key], v_new[key] = m, v
        new[key] = x + rate * m / (v.sqrt() + tau)
    return new, (m_new, v_new)
