"""Our messages through Flower records and back, and a site's own datamodule (no processes)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")

from omnifm.federated.flower.records import (
    evaluate_res_from_records,
    evaluate_res_to_records,
    fit_ins_from_records,
    fit_ins_to_records,
    fit_res_from_records,
    fit_res_to_records,
)
from omnifm.federated.messages import EvaluateRes, FitIns, FitRes

from .helpers import tiny_data


def test_fit_ins_round_trip_keeps_dtypes_shapes_and_the_bank() -> None:
    # Prepare
    weights = {"w": torch.randn(3, 4), "bn.num_batches_tracked": torch.tensor(7)}
    bank = {"vectors": torch.randn(5, 8), "ids": torch.arange(5), "modalities": ["ct", "mri"]}
    ins = FitIns(round=2, weights=weights, seed=123, bank=bank, prototypes=4)
    # Execute
    back, client = fit_ins_from_records(fit_ins_to_records(ins, "ct"))
    # Assert
    assert client == "ct" and (back.round, back.seed, back.prototypes) == (2, 123, 4)
    assert list(back.weights) == list(weights)
    for key, value in weights.items():
        assert back.weights[key].dtype == value.dtype and torch.equal(back.weights[key], value)
    assert torch.equal(back.bank["vectors"], bank["vectors"])
    assert torch.equal(back.bank["ids"], bank["ids"]) and back.bank["modalities"] == ["ct", "mri"]


def test_fit_ins_without_bank_and_results_round_trip() -> None:
    back, _ = fit_ins_from_records(fit_ins_to_records(FitIns(1, {"w": torch.ones(2)}, 0), "a"))
    assert back.bank is None
    res = FitRes(
        client="a",
        modality="ct",
        num_examples=16,
        weights={"w": torch.randn(2, 2)},
        metrics={"train/loss": 0.5},
        prototypes=torch.randn(4, 8),
        hit_ids=torch.tensor([0, 3]),
        hit_counts=torch.tensor([5, 1]),
    )
    got = fit_res_from_records(fit_res_to_records(res, steps=4))
    assert (got.client, got.modality, got.num_examples, got.metrics) == ("a", "ct", 16, res.metrics)
    for name in ("prototypes", "hit_ids", "hit_counts"):
        assert torch.equal(getattr(got, name), getattr(res, name)), name
    assert torch.equal(got.weights["w"], res.weights["w"])
    ev = evaluate_res_from_records(evaluate_res_to_records(EvaluateRes("a", 8, {"val/acc": 0.25})))
    assert ev == EvaluateRes("a", 8, {"val/acc": 0.25})


def test_a_site_datamodule_has_the_examples_and_shuffle_of_the_full_scenario() -> None:
    full, site = tiny_data(), tiny_data()
    mine = site.site_datamodule("mri")
    assert site._ready == {1}  # only mri's source was read
    ref = full.client_datamodule("mri")
    for split in ("train", "val", "test"):
        assert list(mine.datasets[split].indices) == list(ref.datasets[split].indices)
    first = next(iter(mine.train_dataloader()))["image"]
    assert torch.equal(first, next(iter(ref.train_dataloader()))["image"])
