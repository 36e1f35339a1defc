"""Checkpoints that do not fit the recipe are refused with what differs."""

from __future__ import annotations

import pytest
import torch

from omnifm.federated.checkpoint import CheckpointMismatch, check_fits, recipe_differences


def test_check_fits_names_shapes_missing_and_extra_tensors() -> None:
    model = {"a": torch.zeros(4, 16), "b": torch.zeros(16), "c": torch.zeros(1)}
    saved = {"a": torch.zeros(4, 8), "b": torch.zeros(8), "d": torch.zeros(1)}
    check_fits(dict(model), model, "shared state")  # a fitting checkpoint passes
    with pytest.raises(CheckpointMismatch) as error:
        check_fits(saved, model, "shared state")
    message = str(error.value)
    assert message.startswith("the checkpoint's shared state does not fit the model")
    assert "2 tensors of other shapes (checkpoint vs model): a (4, 8) vs (4, 16), b (8,)" in message
    assert "1 tensors missing from the checkpoint: c" in message
    assert "1 tensors the model lacks: d" in message


def test_recipe_differences_are_dotted_keys_with_both_values() -> None:
    saved = (
        "model:\n  init_args: {embed_dim: 128, stack: {init_args: {top_k: 8}}}\nckpt_path: null\n"
    )
    now = "model:\n  init_args: {embed_dim: 256, stack: {init_args: {top_k: 8}}}\nckpt_path: last\n"
    assert recipe_differences(saved, now) == ["model.init_args.embed_dim: 128 in the run, 256 now"]
    clients = "data: {clients: [{name: a}, {name: b}]}"
    assert recipe_differences(clients, clients.replace("b}", "c}")) == [
        "data.clients[1].name: 'b' in the run, 'c' now"
    ]


def test_append_csv_keeps_the_rows_already_written(tmp_path) -> None:
    from omnifm.federated.reporting import append_csv

    path = tmp_path / "history_validate.csv"
    append_csv([{"round": 1, "client": "ct", "val/acc": 0.5}], path)
    first = path.read_text()
    append_csv([{"round": 1, "client": "ct", "val/acc": 0.25}], path)
    assert path.read_text().startswith(first) and path.read_text().count("\n") == 3
    append_csv([{"round": 2, "client": "ct", "val/acc": 0.5, "error": "x"}], path)  # new column
    assert path.read_text().splitlines()[:3] == [
        "round,client,val/acc,error",
        "1,ct,0.5,",
        "1,ct,0.25,",
    ]
