"""Differentially private spectral uploads: the mechanism, the accountant, the budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from omnifm.federated import OmniFM
from omnifm.federated.config import BankConfig, PrototypePrivacy
from omnifm.federated.privacy import PrivacyLedger
from omnifm.functional import PROTOTYPE_SENSITIVITY, private_centroids
from omnifm.report import format_privacy, load_run

from .helpers import capture_results, tiny_federation


def test_private_centroids_are_noisy_cluster_means_of_clipped_tokens() -> None:
    # Prepare: two clear clusters around the axes, tokens of any norm
    g = torch.Generator().manual_seed(0)
    tokens = torch.cat(
        [
            torch.tensor([[5.0, 0.1]]) * torch.rand(50, 1, generator=g) + 0.1,
            torch.tensor([[0.1, 3.0]]) * torch.rand(30, 1, generator=g) + 0.1,
        ]
    )
    starts = torch.eye(2)
    # Execute / Assert: without noise, the mean of each cluster's tokens scaled to norm 2
    exact = private_centroids(tokens, starts, clip=2.0, noise_multiplier=0.0)
    scaled = 2.0 * torch.nn.functional.normalize(tokens, dim=1)
    torch.testing.assert_close(exact[0], scaled[:50].mean(0))
    torch.testing.assert_close(exact[1], scaled[50:].mean(0))
    # with noise: the sums' noise has std noise_multiplier * clip (counts are large here)
    draws = torch.stack(
        [
            private_centroids(tokens, starts, 2.0, 3.0, torch.Generator().manual_seed(i))
            for i in range(400)
        ]
    )
    # first order: 50 * centroid = sum + noise - centroid * count noise, noise stds 3 * 2 and 3
    spread = (draws[:, 0] * 50).std(0)
    expected = ((3.0 * 2.0) ** 2 + (3.0 * exact[0]) ** 2).sqrt()
    torch.testing.assert_close(spread, expected, rtol=0.15, atol=0.0)


def test_the_ledger_spends_what_the_rdp_analysis_says() -> None:
    ledger = PrivacyLedger(PrototypePrivacy(noise_multiplier=4.0, epsilon=100.0, delta=1e-5))
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus' defaults
    for releases in (1, 5, 20):
        rdp = compute_rdp(
            q=1.0, noise_multiplier=4.0 / PROTOTYPE_SENSITIVITY, steps=releases, orders=orders
        )
        expected, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
        assert ledger.epsilon("a", releases) == pytest.approx(expected, rel=1e-6)
    # more releases spend more, more noise spends less
    assert ledger.epsilon("a", 1) < ledger.epsilon("a", 5) < ledger.epsilon("a", 20)
    noisier = PrivacyLedger(PrototypePrivacy(noise_multiplier=8.0, epsilon=100.0))
    assert noisier.epsilon("a", 5) < ledger.epsilon("a", 5)


def test_a_budget_smaller_than_one_upload_is_refused() -> None:
    with pytest.raises(ValueError, match=r"one upload at noise_multiplier 1.0 spends epsilon 7"):
        PrivacyLedger(PrototypePrivacy(noise_multiplier=1.0, epsilon=1.0))


def _private_run(tmp_path: Path, rounds: int, budget: float):
    privacy = PrototypePrivacy(noise_multiplier=4.0, epsilon=budget)
    return tiny_federation(tmp_path, OmniFM(), rounds=rounds, bank=BankConfig(privacy=privacy))


def test_a_client_at_its_budget_stops_uploading_and_a_resumed_run_keeps_counting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a budget of two uploads (the warm-up and round 1)
    ledger = PrivacyLedger(PrototypePrivacy(noise_multiplier=4.0, epsilon=100.0))
    budget = (ledger.epsilon("a", 2) + ledger.epsilon("a", 3)) / 2
    run = _private_run(tmp_path / "whole", rounds=3, budget=budget)
    sent = capture_results(run)
    # Execute
    run.fit()
    # Assert: uploads in round 1 only, then training without them
    by_round = {r: [s for s in sent[3 * (r - 1) : 3 * r]] for r in (1, 2, 3)}
    assert all(s.prototypes is not None for s in by_round[1])
    assert all(s.prototypes is None for s in by_round[2] + by_round[3])
    assert run.server.privacy is not None
    assert set(run.server.privacy.releases.values()) == {2}
    assert "uploads no more spectral prototypes" in caplog.text
    history = [r for r in run.history if r["stage"] == "privacy"]
    assert [r["round"] for r in history] == [1, 1, 1]  # rows when a client uploads
    assert history[-1]["privacy/epsilon"] == pytest.approx(ledger.epsilon("a", 2))
    report = format_privacy([load_run(tmp_path / "whole" / "test")])
    assert f"| ct | {ledger.epsilon('a', 2):.4f} | - | 1 |" in report
    # a run stopped after round 1 and resumed counts on from its checkpoint
    first = _private_run(tmp_path / "split", rounds=1, budget=budget)
    first.fit()
    resumed = _private_run(tmp_path / "split", rounds=3, budget=budget)
    resumed.fit(ckpt_path="last")
    assert resumed.server.privacy is not None
    assert resumed.server.privacy.releases == run.server.privacy.releases


def test_importing_the_library_leaves_logging_to_the_application() -> None:
    # opacus calls logging.basicConfig when imported: imported at the top of the library, it
    # silenced the CLI's INFO lines (the round log) in every run
    code = (
        "import logging, omnifm.cli, omnifm.federated.flower.serverapp, omnifm.federated.privacy\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
