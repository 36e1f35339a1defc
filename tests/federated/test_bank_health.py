"""The spectral knowledge carries information: bank health metrics and a phantom federation."""

from pathlib import Path

import torch

from omnifm.bank import SpectralBank
from omnifm.federated import FitRes, OmniFM
from omnifm.federated.client import token_spread
from omnifm.federated.health import modality_cosines, retrieval_health, spread_health
from omnifm.report import format_bank_health, load_run

from .helpers import tiny_federation


def fit_res(client: str, modality: str, protos: torch.Tensor, hits=None) -> FitRes:
    ids, counts = (None, None) if hits is None else torch.tensor(hits).unique(return_counts=True)
    return FitRes(client, modality, 10, {}, {}, protos, ids, counts)


def test_retrieval_purity_chance_and_hit_entropy() -> None:
    # Prepare: entries 0-1 ct, 2-3 mri
    bank = SpectralBank(2, capacity=8, merge_threshold=None)
    bank.update("a", "ct", torch.tensor([[1.0, 0.0], [1.0, 0.1]]), 0)
    bank.update("b", "mri", torch.tensor([[0.0, 1.0], [0.1, 1.0]]), 0)
    results = [
        fit_res("a", "ct", torch.empty(0, 2), hits=[0, 0, 1, 2]),  # 3 of 4 own modality
        fit_res("b", "mri", torch.empty(0, 2), hits=[2, 3]),  # all own modality
    ]
    # Execute
    health = retrieval_health(bank, results)
    # Assert
    assert health["bank/purity"] == (0.75 + 1.0) / 2
    assert health["bank/purity_chance"] == 0.5
    hits = torch.tensor([2.0, 1.0, 2.0, 1.0]) / 6
    expected = float(-(hits * hits.log()).sum() / torch.log(torch.tensor(4.0)))
    assert abs(health["bank/hit_entropy"] - expected) < 1e-6


def test_spread_within_and_across_modalities_and_collapse() -> None:
    spread = modality_cosines(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), ["a", "a", "b"])
    assert spread == (1.0, 0.0)
    bank = SpectralBank(2, capacity=8, merge_threshold=None)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    results = [fit_res("a", "ct", same), fit_res("b", "mri", same)]
    for r in results:
        bank.update(r.client, r.modality, r.prototypes, 1)
    health = spread_health(bank, results)
    assert health["bank/proto_cos_across"] == 1.0  # collapsed: what the warning watches
    assert health["bank/entries"] == 4 and health["bank/entries/ct"] == 2
    assert abs(health["bank/erank"] - 1.0) < 1e-6


def test_token_spread_of_identical_and_orthogonal_tokens() -> None:
    assert abs(token_spread(torch.ones(5, 3))["spectral/cos_within"] - 1.0) < 1e-12
    spread = token_spread(torch.eye(4))
    assert abs(spread["spectral/cos_within"]) < 1e-12 and abs(spread["spectral/erank"] - 4) < 1e-6


def test_federated_spectral_tokens_stay_informative(tmp_path: Path) -> None:
    """After a short federation on phantoms: tokens of different modalities are further apart
    than tokens of one modality, the bank keeps several entries per client, retrieval
    prefers a client's own modality, and the health is in history.csv and the report."""
    # Prepare
    run = tiny_federation(tmp_path, OmniFM(), rounds=3, seed=0)
    # Execute
    run.fit()
    # Assert: tokens of the final shared weights on each client's training images
    run.model.load_state_dict({**run.server.shared, **run.server.initial_personal})
    tokens, tags = [], []
    for client in run.clients.values():
        s = client.spectral_tokens(run.model)
        tokens.append(s)
        tags += [client.modality] * len(s)
    within, across = modality_cosines(torch.cat(tokens), tags)
    assert within > across + 0.2, (within, across)
    bank = run.server.bank
    for name in run.clients:
        assert int(bank.entries_of(client=name).sum()) >= 3, bank
    health = run.server.health
    assert health["bank/purity"] > health["bank/purity_chance"] + 0.1, health
    log = load_run(run.run_dir)
    assert [r["round"] for r in log.bank_health()] == [1, 2, 3]
    assert "| 3 |" in format_bank_health([log])
