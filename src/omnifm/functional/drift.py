"""Client-drift corrections of personalised and drift-robust strategies, as pure functions on
named tensors: SCAFFOLD's control variates, FedDyn's dynamic regulariser and server state,
MOON's model-contrastive loss, GPFL's category guidance."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = [
    "category_guidance_loss",
    "control_variate_update",
    "dynamic_regularizer",
    "feddyn_server_update",
    "model_contrastive_loss",
]

Named = Mapping[str, Tensor]


def control_variate_update(
    local: Named, server: Named, start: Named, end: Named, steps: int, lr: float
) -> dict[str, Tensor]:
    """SCAFFOLD's new client control variate, option II of Karimireddy et al. 2020 (eq. 4):
    ``c_i+ = c_i - c + (x - y_i) / (K lr)``, from the round's start weights ``x``, the locally
    trained ``y_i``, ``K`` local steps at learning rate ``lr``. Under plain SGD it is the mean
    of the round's raw gradients.

    >>> new = control_variate_update({"w": torch.zeros(1)}, {"w": torch.ones(1)},
    ...                              {"w": torch.tensor([2.0])}, {"w": torch.tensor([1.0])}, 4, 0.5)
    >>> new["w"]  # 0 - 1 + (2 - 1) / (4 * 0.5)
    tensor([-0.5000])
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"control_variate_update needs steps >= 1 and lr > 0, got {steps}, {lr}")
    return {k: local[k] - server[k] + (start[k] - end[k]) / (steps * lr) for k in local}


def dynamic_regularizer(params: Named, reference: Named, gradient: Named, alpha: float) -> Tensor:
    """FedDyn's client term (Acar et al. 2021, Algorithm 1):
    ``alpha / 2 ||theta - theta_server||^2 - <g_k, theta>``, ``g_k`` the client's gradient state.
    """
    terms = [
        0.5 * alpha * (params[k] - reference[k]).pow(2).sum() - (gradient[k] * params[k]).sum()
        for k in reference
    ]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def feddyn_server_update(
    h: Named, current: Named, client_sum: Named, count: int, alpha: float, num_clients: int
) -> dict[str, Tensor]:
    """FedDyn's server state (Acar et al. 2021, Algorithm 1):
    ``h <- h - alpha / m sum_k (theta_k - theta)`` over the round's ``count`` clients ``k``,
    given ``client_sum = sum_k theta_k`` (so a server can fold clients in as they arrive),
    ``m`` every client of the federation. The new server model is then
    ``mean_k theta_k - h / alpha``."""
    return {
        k: h[k] - alpha / num_clients * (client_sum[k] - count * current[k]).to(h[k].dtype)
        for k in h
    }


def model_contrastive_loss(z: Tensor, z_global: Tensor, z_previous: Tensor, tau: float) -> Tensor:
    """MOON's term (Li et al. 2021, eq. 3), mean over the batch:
    ``-log(exp(sim(z, z_glob)/tau) / (exp(sim(z, z_glob)/tau) + exp(sim(z, z_prev)/tau)))``,
    ``sim`` the cosine similarity of the representations ``(B, d)``.

    >>> z = torch.tensor([[1.0, 0.0]])
    >>> round(float(model_contrastive_loss(z, z, -z, tau=1.0)), 4)  # -log(e / (e + 1/e))
    0.1269
    """
    positive = torch.nn.functional.cosine_similarity(z, z_global, dim=-1) / tau
    negative = torch.nn.functional.cosine_similarity(z, z_previous, dim=-1) / tau
    logits = torch.stack([positive, negative], dim=1)
    target = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return torch.nn.functional.cross_entropy(logits, target)


def category_guidance_loss(
    features: Tensor, embeddings: Tensor, frozen: Tensor, labels: Tensor, lam: float
) -> Tensor:
    """GPFL's guidance of the global features (Zhang et al. 2023, as in the paper's code):
    angle-level, the cross-entropy of the cosines between ``features (B, d)`` and the category
    ``embeddings (C, d)``; magnitude-level, ``lam ||features - frozen[labels]||_2`` (the
    embeddings as the round started, the norm over the whole batch)."""
    cosine = torch.nn.functional.normalize(features) @ torch.nn.functional.normalize(embeddings).T
    angle = torch.nn.functional.cross_entropy(cosine, labels)
    return angle + lam * torch.linalg.vector_norm(features - frozen[labels])
