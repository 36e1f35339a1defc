"""Strategies with client state: SCAFFOLD, FedDyn, MOON, FedRep, Ditto and GPFL against their
papers' updates, and the client store that keeps their state within a memory budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from omnifm.federated import (
    GPFL,
    MOON,
    SCAFFOLD,
    ClientStore,
    Ditto,
    FedAvg,
    FedDyn,
    FedRep,
    LocalRound,
    Strategy,
)
from omnifm.functional import (
    category_guidance_loss,
    control_variate_update,
    dynamic_regularizer,
    feddyn_server_update,
    model_contrastive_loss,
)

from .helpers import tiny_federation, tiny_task


def test_control_variates_follow_option_two_and_the_server_moves_c_by_the_sampled_share() -> None:
    # Prepare: c_i = 1, c = 3, x = 10, y_i = 6 after K = 4 steps at lr 0.5
    one = {"w": torch.tensor([1.0])}
    new = control_variate_update(
        one, {"w": torch.tensor([3.0])}, {"w": torch.tensor([10.0])}, {"w": torch.tensor([6.0])},
        steps=4, lr=0.5,
    )  # fmt: skip
    # Assert: c_i+ = c_i - c + (x - y_i) / (K lr) = 1 - 3 + 4 / 2
    torch.testing.assert_close(new["w"], torch.tensor([0.0]))
    # Execute: the server with N = 4 clients, 2 of them sampled, sending dc = 2 and 4
    model = nn.Linear(1, 1, bias=False)
    strategy = SCAFFOLD()
    strategy.bind(model, num_clients=4)  # type: ignore[arg-type]
    states = [{"weight": torch.ones(1, 1)}, {"weight": 3 * torch.ones(1, 1)}]
    uploads = [{"weight": 2 * torch.ones(1, 1)}, {"weight": 4 * torch.ones(1, 1)}]
    new_weights = strategy.aggregate(states, [1, 1], {"weight": torch.zeros(1, 1)}, None, uploads)
    # Assert: x = mean y_i; c = 0 + |S|/N mean(dc) = 2/4 * 3
    torch.testing.assert_close(new_weights["weight"], torch.full((1, 1), 2.0))
    torch.testing.assert_close(strategy.broadcast()["weight"], torch.full((1, 1), 1.5))
    assert set(strategy.state_dict()["c"]) == {"weight"}


class Quadratic(LightningModule):
    """A client's objective ``0.5 ||A w - b||^2``, one full-batch SGD step per batch."""

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.lr, self.momentum = lr, momentum

    def training_step(self, batch: list[Tensor], _: int) -> Tensor:
        a, b = batch[0][0], batch[1][0]
        return 0.5 * (a @ self.w - b).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def federated_quadratic(
    strategy: Strategy, rounds: int, steps: int = 10, momentum: float = 0.0
) -> float:
    """Rounds of ``strategy`` on two clients with opposite, ill-conditioned objectives; the
    global objective's excess over its minimum at the end."""
    problems = [
        (torch.diag(torch.tensor([3.0, 0.3])), torch.tensor([3.0, -1.0])),
        (torch.diag(torch.tensor([0.3, 3.0])), torch.tensor([-1.0, 3.0])),
    ]
    model = Quadratic(lr=0.1 * (1 - momentum), momentum=momentum)  # the same effective rate
    strategy.bind(model, num_clients=2)  # type: ignore[arg-type]
    shared = {k: v.clone() for k, v in model.state_dict().items()}
    own: list[dict[str, Tensor]] = [{}, {}]
    for _ in range(rounds):
        states, uploads = [], []  # one round: each client from the shared weights
        for i, (a, b) in enumerate(problems):
            model.load_state_dict(shared)
            local = LocalRound(model, shared, strategy.broadcast(), dict(own[i]))  # type: ignore[arg-type]
            data = DataLoader(TensorDataset(a[None].repeat(steps, 1, 1), b[None].repeat(steps, 1)))

            def fit(callbacks: list[Callback], times: int, data: DataLoader = data) -> Trainer:
                trainer = Trainer(
                    max_steps=steps * times, callbacks=callbacks, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu",
                )  # fmt: skip
                trainer.fit(model, data)
                return trainer

            strategy.local_fit(local, fit)
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            uploads.append(local.upload)
            own[i] = local.state
        shared = strategy.aggregate(states, [1, 1], shared, None, uploads)

    def loss(w: Tensor) -> Tensor:
        return sum(0.5 * (a @ w - b).pow(2).sum() for a, b in problems)

    a_all = torch.cat([a for a, _ in problems])
    b_all = torch.cat([b for _, b in problems])
    optimum = torch.linalg.lstsq(a_all, b_all).solution
    return float(loss(shared["w"]) - loss(optimum))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_scaffold_removes_the_client_drift_that_fedavg_keeps(momentum: float) -> None:
    # two clients, 10 local SGD steps each, 30 rounds: FedAvg converges to a biased point
    fedavg = federated_quadratic(FedAvg(), rounds=30, momentum=momentum)
    scaffold = federated_quadratic(SCAFFOLD(), rounds=30, momentum=momentum)
    # measured: FedAvg 0.83 (plain SGD) and 0.028 (momentum 0.9) above the optimum, SCAFFOLD
    # 2.4e-7 and 1.2e-7
    assert fedavg > 0.02 and scaffold < 1e-3 and scaffold < fedavg / 100


def test_feddyn_term_and_server_state_follow_acar_et_al() -> None:
    # client: alpha/2 ||theta - theta_s||^2 - <g, theta> = 0.5 * 0.5 * 4 - 1 * 3 = -2
    theta = {"w": torch.tensor([3.0])}
    term = dynamic_regularizer(theta, {"w": torch.tensor([1.0])}, {"w": torch.tensor([1.0])}, 0.5)
    torch.testing.assert_close(term, torch.tensor(-2.0))
    # server: h <- h - alpha/m sum (theta_k - theta) = 0 - 0.5/4 * (2 + 4)
    current, clients = (
        {"w": torch.tensor([1.0])},
        [{"w": torch.tensor([3.0])}, {"w": torch.tensor([5.0])}],
    )
    client_sum = {"w": clients[0]["w"] + clients[1]["w"]}
    h = feddyn_server_update({"w": torch.zeros(1)}, current, client_sum, 2, 0.5, num_clients=4)
    torch.testing.assert_close(h["w"], torch.tensor([-0.75]))
    # the strategy sends mean theta_k - h / alpha = 4 + 1.5
    strategy = FedDyn(alpha=0.5)
    strategy.bind(nn.Linear(1, 1, bias=False), num_clients=4)  # type: ignore[arg-type]
    new = strategy.aggregate(
        [{"weight": v["w"][None]} for v in clients], [1, 1], {"weight": current["w"][None]}
    )
    torch.testing.assert_close(new["weight"], torch.tensor([[5.5]]))


def test_moon_term_is_the_papers_contrastive_loss() -> None:
    z, z_glob, z_prev = torch.randn(3, 4, 5).unbind(0)
    tau = 0.5
    cos = torch.nn.functional.cosine_similarity
    pos, neg = torch.exp(cos(z, z_glob, dim=-1) / tau), torch.exp(cos(z, z_prev, dim=-1) / tau)
    expected = -torch.log(pos / (pos + neg)).mean()
    torch.testing.assert_close(model_contrastive_loss(z, z_glob, z_prev, tau), expected)
    # identical global and previous representations: log 2, whatever z is
    assert math.isclose(
        float(model_contrastive_loss(z, z_glob, z_glob, tau)), math.log(2), rel_tol=1e-6
    )


def test_fedrep_trains_the_head_then_the_body(tmp_path: Path) -> None:
    # Prepare: a client of a tiny federation, observed around each of its local fits
    run = tiny_federation(tmp_path, FedRep(head_epochs=2), rounds=1, stack=False)
    model = run.model
    head = model.parameter_groups()["head"]
    phases: list[tuple[set[str], int]] = []

    def fit(callbacks: list[Callback], times: int) -> Trainer:
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        trainer = run.make_trainer(logger=False, callbacks=callbacks)
        trainer.fit_loop.epoch_loop.max_steps *= times
        trainer.fit(model, datamodule=run.clients["ct"].datamodule)
        changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
        phases.append((changed, trainer.global_step))
        return trainer

    # Execute
    run.config.strategy.local_fit(LocalRound(model, run.server.shared), fit)
    # Assert: head only, for twice the local budget (max_steps 2); then all of the body only
    (first, first_steps), (second, second_steps) = phases
    body = {k for k, _ in model.named_parameters()} - head
    assert first == head and first_steps == 4
    assert second == body and second_steps == 2
    assert all(p.requires_grad for p in model.parameters())  # unfrozen afterwards


def test_fedrep_and_moon_and_feddyn_run_rounds(tmp_path: Path) -> None:
    for strategy in (FedRep(head_epochs=2), MOON(), FedDyn()):
        run = tiny_federation(tmp_path / type(strategy).__name__, strategy, rounds=2, stack=False)
        rows = run.fit()
        assert math.isfinite(rows[-1]["test/acc"])
        # FedRep: (2 + 1) x max_steps 2 per round; the others one budget
        steps = 12 if isinstance(strategy, FedRep) else 4
        assert run.clients["ct"].steps == steps, type(strategy).__name__
        if isinstance(strategy, MOON):  # the previous local model stays on the client
            assert set(run.strategy_state("ct")) == set(run.model.state_dict())
        if isinstance(strategy, FedDyn):
            assert set(run.strategy_state("ct")) == {k for k, _ in run.model.named_parameters()}


def test_ditto_evaluates_each_client_with_its_own_model(tmp_path: Path) -> None:
    # Prepare
    run = tiny_federation(tmp_path, Ditto(lam=0.1), rounds=2, stack=False)
    run.fit()
    client, shared = run.clients["ct"], run.server.shared
    own = run.strategy_state("ct")
    # Assert: the personal model is a whole model, not the global one
    assert set(own) == set(shared)
    assert any(not torch.equal(own[k], shared[k]) for k in shared)
    # Execute: the client evaluated under Ditto, with the global model, and with its own
    with run._holding("ct"):
        ditto = client.evaluate(
            run.model, shared, None, run.make_trainer, "validate", run.config.strategy
        )
        plain = client.evaluate(run.model, shared, None, run.make_trainer, "validate")
        by_hand = client.evaluate(run.model, own, None, run.make_trainer, "validate")
    # Assert
    assert ditto.metrics == by_hand.metrics and ditto.metrics != plain.metrics


def test_a_thousand_personal_models_stay_within_the_memory_budget(tmp_path: Path) -> None:
    # Prepare: Ditto's client state is a whole model; a budget of 50 of them
    state = {f"strategy/{k}": v for k, v in tiny_task(stack=False).state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in state.values())
    store = ClientStore(budget=50 * size, folder=lambda: tmp_path / "client_states")
    # Execute: 1000 clients write their state, 10 of them are read back
    for i in range(1000):
        store.put(
            f"site{i}", {k: v + i if v.is_floating_point() else v for k, v in state.items()}, 1
        )
        assert store.memory_bytes <= 50 * size
    back = {i: store.get(f"site{i}") for i in (0, 1, 500, 998, 999)}
    # Assert: 950 on disk, one file each; every state read back as written
    assert len(store) == 1000 and store.memory_bytes <= 50 * size
    assert len(list((tmp_path / "client_states").glob("*.safetensors"))) >= 950
    key = next(k for k, v in state.items() if v.is_floating_point())
    for i, got in back.items():
        torch.testing.assert_close(got[key], state[key] + i)
    # a checkpoint names the files; a store restored from it reads the same states
    restored = ClientStore(budget=50 * size, folder=lambda: tmp_path / "client_states")
    restored.load_state_dict(store.state_dict())
    torch.testing.assert_close(restored.get("site3")[key], state[key] + 3)


def test_the_store_deletes_superseded_files_after_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "client_states"
    store = ClientStore(budget=0, folder=lambda: folder)
    store.put("a", {"x": torch.zeros(4)}, 1)
    store.state_dict()  # checkpoint after round 1 names a.r1
    store.put("a", {"x": torch.ones(4)}, 2)  # written as a.r2
    store.collect()  # a.r1 is still named by the last checkpoint
    assert len(list(folder.glob("*.safetensors"))) == 2
    store.state_dict()  # checkpoint after round 2
    store.collect()
    (left,) = folder.glob("*.safetensors")
    assert ".r2." in left.name
    with pytest.raises(FileNotFoundError, match="client_states"):
        ClientStore(0, lambda: tmp_path / "elsewhere").load_state_dict(store.state_dict())


def test_gpfl_guides_global_features_and_personalises_the_heads_input(tmp_path: Path) -> None:
    # the guidance on hand-made tensors: angle CE + lam * ||f - e_y||
    f, e = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    angle = torch.nn.functional.cross_entropy(torch.eye(2), y)  # cosines are the identity
    got = category_guidance_loss(f, e, e, y, lam=0.5)
    torch.testing.assert_close(got, angle + 0.5 * torch.tensor(1.0))  # ||(0,0),(0,1)|| = 1
    # Prepare: GPFL on a tiny federation whose clients hold different class mixes
    run = tiny_federation(tmp_path, GPFL(), rounds=2, stack=False)
    assert {"gpfl.personal_input", "head.weight"} <= run.server.personal_keys
    assert "gpfl.valve.gamma.0.weight" in run.server.shared  # CoV and GCE are shared
    # Execute
    run.fit()
    # Assert: each client's conditional input is its class frequencies times the embeddings
    # as its last round began
    personal = {n: run.personal_state(n)["gpfl.personal_input"] for n in run.clients}
    frequency = {n: run.strategy_state(n)["class_frequency"] for n in run.clients}
    assert all(math.isclose(float(f.sum()), 1.0, rel_tol=1e-6) for f in frequency.values())
    assert not torch.equal(personal["ct"], personal["mri"])
    # the head reads the features through the valve with that input
    model = run.model
    model.load_state_dict({**run.server.shared, **run.personal_state("ct")})
    features = torch.rand(3, model.head.in_features)
    expected = torch.nn.functional.linear(
        model.gpfl.valve(features, personal["ct"]), model.head.weight, model.head.bias
    )
    torch.testing.assert_close(model.head(features), expected)


def test_gpfl_refuses_a_task_without_classes() -> None:
    from omnifm.tasks import SegmentationTask

    with pytest.raises(ValueError, match="multi-class classifier"):
        GPFL().personal_keys(SegmentationTask(num_classes=2, backbone="test_resnet", stack=None))


def test_scaffold_divides_by_the_effective_rate_of_momentum_sgd() -> None:
    from omnifm.federated.callbacks import effective_lr

    assert effective_lr({"lr": 0.05, "momentum": 0.9}) == pytest.approx(0.5)
    assert effective_lr({"lr": 1e-3, "betas": (0.9, 0.999)}) == 1e-3  # Adam: the rate as is


def test_scaffold_client_takes_the_papers_corrected_steps_under_plain_sgd() -> None:
    # Prepare: one client of a quadratic, c = (1, -2), c_i = (0.5, 0.5), 7 plain SGD steps
    from omnifm.federated.callbacks import ControlVariates

    a, b = torch.diag(torch.tensor([3.0, 0.3])), torch.tensor([3.0, -1.0])
    model = Quadratic(lr=0.1)
    shared = {k: v.clone() for k, v in model.state_dict().items()}
    server, own = {"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([0.5, 0.5])}
    local = LocalRound(model, shared, server, dict(own))  # type: ignore[arg-type]
    data = DataLoader(TensorDataset(a[None].repeat(7, 1, 1), b[None].repeat(7, 1)))
    trainer = Trainer(
        max_steps=7, callbacks=[ControlVariates(local)], logger=False, accelerator="cpu",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    # Execute
    trainer.fit(model, data)
    # Assert: y -= lr (g + c - c_i) each step, and option II's c_i+ is the mean raw gradient
    w, gradients = torch.zeros(2), []
    for _ in range(7):
        gradients.append(a.T @ (a @ w - b))
        w = w - 0.1 * (gradients[-1] + server["w"] - own["w"])
    torch.testing.assert_close(model.w.detach(), w)
    torch.testing.assert_close(local.state["w"], torch.stack(gradients).mean(0))
    option_two = control_variate_update(own, server, shared, {"w": w}, steps=7, lr=0.1)
    torch.testing.assert_close(local.state["w"], option_two["w"])
    torch.testing.assert_close(local.upload["w"], local.state["w"] - own["w"])
