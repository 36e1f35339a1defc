"""Differentially private local training: per-example gradients, the private step, the
accountant and the budget, end to end on the classification task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from torch import nn

from omnifm.datamodules import PhantomDataModule
from omnifm.federated import FedProx, OmniFM
from omnifm.federated.config import TrainingPrivacy
from omnifm.federated.dpsgd import (
    PrivateTraining,
    per_example_gradients,
    poisson_sampled,
    private_model,
)
from omnifm.federated.privacy import PrivacyLedger, rdp_epsilon
from omnifm.report import format_privacy, load_run

from .helpers import tiny_federation, tiny_task

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus' defaults


def _batch(n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(n, 1, 16, 16, generator=g), "label": torch.arange(n) % 4}


def test_the_private_model_has_no_batch_norm_and_per_example_gradients_are_exact() -> None:
    torch.manual_seed(0)
    task = private_model(tiny_task(True))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in task.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in task.modules())
    task.eval().double()  # no dropout, float64: both ways compute the same function exactly
    batch = {k: v.double() if v.is_floating_point() else v for k, v in _batch().items()}
    grads = per_example_gradients(task, batch)
    for i in (0, 3):
        task.zero_grad()
        one = {k: v[i : i + 1] for k, v in batch.items()}
        task.objective(one)[0].backward()
        for name, p in task.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[name][i], p.grad, atol=1e-9, rtol=1e-7)


def test_a_private_step_moves_by_the_mean_of_clipped_example_gradients() -> None:
    # Prepare: noise 0, so the step is exactly the clipped mean (lr 1, plain SGD)
    torch.manual_seed(0)
    task = private_model(tiny_task(True))
    task.optimizer = lambda params: torch.optim.SGD(params, lr=1.0)
    data = PhantomDataModule(
        modality="ct", num_train=8, num_val=4, num_test=4, size=16, batch_size=8
    )
    sampled, rate, size = poisson_sampled(data)
    assert (rate, size) == (1.0, 8)  # one batch an epoch: every example, every step
    privacy = TrainingPrivacy(noise_multiplier=1e-9, max_grad_norm=0.01)
    private = PrivateTraining(privacy, size)
    batch = next(iter(sampled.train_dataloader()))
    task.eval()
    grads = per_example_gradients(task, batch)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
    scale = (0.01 / (norms + 1e-6)).clamp(max=1.0)
    expected = {n: (g * scale.view(-1, *[1] * (g.dim() - 1))).sum(0) / 8 for n, g in grads.items()}
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    # Execute: one step of a Trainer with the private callback
    trainer = Trainer(
        max_steps=1,
        callbacks=[private],
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    for m in task.modules():  # the same function as the reference above
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    trainer.fit(task, datamodule=sampled)
    # Assert
    assert private.steps == 1
    step = {n: before[n] - p.detach() for n, p in task.named_parameters()}
    total = torch.cat([g.flatten() for g in step.values()]).norm()
    assert total <= 0.01 + 1e-6  # no step is longer than the clip
    for name in ("head.weight", "encoder.proj.weight"):
        torch.testing.assert_close(step[name], expected[name], atol=1e-6, rtol=1e-3)


def test_training_epsilon_follows_the_rdp_analysis() -> None:
    privacy = TrainingPrivacy(noise_multiplier=1.2, epsilon=100.0, delta=1e-5)
    ledger = PrivacyLedger(training=privacy)
    report = {"privacy/noise_multiplier": 1.2, "privacy/sample_rate": 0.1, "privacy/dp_steps": 20}
    spent = []
    for _ in range(3):
        ledger.record_training("a", report)
        spent.append(ledger.training_epsilon("a"))
    rdp = compute_rdp(q=0.1, noise_multiplier=1.2, steps=60, orders=ORDERS)
    assert spent[-1] == pytest.approx(get_privacy_spent(orders=ORDERS, rdp=rdp, delta=1e-5)[0])
    assert spent[0] < spent[1] < spent[2]  # more rounds spend more
    noisier = PrivacyLedger(training=privacy)
    noisier.record_training("a", {**report, "privacy/noise_multiplier": 3.0})
    assert noisier.training_epsilon("a") < spent[0]  # more noise spends less
    assert ledger.training_epsilon("a", more=1) > spent[-1]  # one more round, predicted


def _private_run(tmp_path: Path, rounds: int, budget: float, strategy=None):
    privacy = TrainingPrivacy(noise_multiplier=1.0, epsilon=budget)
    return tiny_federation(tmp_path, strategy or OmniFM(), rounds=rounds, dp_sgd=privacy)


def test_dp_sgd_trains_the_classifier_counts_resumes_and_stops_at_the_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a budget of two rounds (each client takes 2 steps a round at rate 1/3)
    step = (1.0, 1 / 3, 2)
    two, three = rdp_epsilon([step] * 2, 1e-5), rdp_epsilon([step] * 3, 1e-5)
    budget = (two + three) / 2
    run = _private_run(tmp_path / "whole", rounds=4, budget=budget)
    # Execute
    results = run.fit()
    # Assert: two rounds trained, then training ended and the model was tested
    assert run.round == 2
    assert "have DP-SGD budget left" in caplog.text
    assert "is not trained again" in caplog.text
    assert results[-1]["client"] == "mean" and 0.0 <= results[-1]["test/acc"] <= 1.0
    rows = [r for r in run.history if r["stage"] == "privacy"]
    assert [r["round"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert rows[-1]["privacy/dp_epsilon"] == pytest.approx(two)
    report = format_privacy([load_run(tmp_path / "whole" / "test")])
    assert f"| ct | - | {two:.4f} | 2 |" in report
    # a run stopped after round 1 and resumed counts on from its checkpoint
    _private_run(tmp_path / "split", rounds=1, budget=budget).fit()
    resumed = _private_run(tmp_path / "split", rounds=4, budget=budget)
    resumed.fit(ckpt_path="last")
    assert resumed.server.privacy is not None and run.server.privacy is not None
    assert resumed.server.privacy.trained == run.server.privacy.trained
    assert resumed.round == 2


def test_dp_sgd_with_a_loss_term_strategy(tmp_path: Path) -> None:
    # FedProx's proximal term is part of each example's loss (functional_call sees it)
    run = _private_run(tmp_path, rounds=1, budget=100.0, strategy=FedProx(mu=0.1))
    run.fit()
    assert run.server.privacy is not None
    assert set(run.server.privacy.trained) == {"ct", "mri", "ultrasound"}


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale if float(x.sum()) > -1e9 else x  # reads a value: no vmap


def test_a_loss_vmap_cannot_run_is_differentiated_example_by_example() -> None:
    torch.manual_seed(0)
    task = private_model(tiny_task(True))
    task.encoder.backbone.conv1.add_module("branch", _Branching())
    task.eval().double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in _batch(3).items()}
    grads = per_example_gradients(task, batch)
    assert grads["encoder.backbone.conv1.branch.scale"].shape == (3,)
    task.zero_grad()
    task.objective({k: v[1:2] for k, v in batch.items()})[0].backward()
    for name, p in task.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name][1], p.grad, atol=1e-9, rtol=1e-7)


class _OwnBatchNorm(nn.BatchNorm2d):
    """A batch norm subclass (as timm's BatchNormAct2d): Opacus' fixers do not replace it."""


def test_a_model_that_cannot_be_made_private_names_the_module_and_why() -> None:
    task = tiny_task(True)
    task.encoder.backbone.bn1 = _OwnBatchNorm(task.encoder.backbone.bn1.num_features)
    with pytest.raises(ValueError, match=r"encoder.backbone.bn1 \(_OwnBatchNorm\) normalises"):
        private_model(task)
