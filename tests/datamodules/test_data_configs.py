"""The YAML data configs under datamodules/ parse and instantiate with jsonargparse."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonargparse import ArgumentParser
from lightning import LightningDataModule

from omnifm.datamodules import FederatedDataModule

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load(config: str) -> FederatedDataModule:
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    data = parser.instantiate(parser.parse_args(["--data", config])).data
    assert isinstance(data, FederatedDataModule)
    return data


def test_phantom_config_has_four_modalities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)

    data = _load("datamodules/phantom.yaml")
    infos = data.clients
    batch = next(iter(data.client_datamodule("mri").train_dataloader()))

    assert [info.modality for info in infos] == ["ct", "mri", "ultrasound", "pathology"]
    assert {(i.num_train, i.num_val, i.num_test) for i in infos} == {(192, 64, 64)}
    assert (data.in_channels, data.num_classes, data.batch_size) == (3, 4, 32)
    assert batch["image"].shape == (32, 3, 32, 32)


def test_medmnist_config_has_nine_clients(
    monkeypatch: pytest.MonkeyPatch, medmnist_dir: Path
) -> None:
    monkeypatch.chdir(REPO_ROOT)

    data = _load("datamodules/medmnist_cross_modal.yaml")
    infos = data.clients
    batch = next(iter(data.client_datamodule("retinamnist-1").val_dataloader()))

    assert [i.name for i in infos][::3] == ["breastmnist-0", "retinamnist-0", "pneumoniamnist-0"]
    assert [i.modality for i in infos][::3] == ["ultrasound", "fundus", "x-ray"]
    assert sum(i.num_train for i in infos[:3]) == 546
    assert sum(i.num_test for i in infos[6:]) == 624
    assert (data.in_channels, data.num_classes) == (3, 9)
    assert batch["image"].shape == (32, 3, 28, 28)
    assert int(batch["label"].min()) >= 2 and int(batch["label"].max()) <= 6


def test_real_data_configs_share_one_root_with_client_folders_below_it() -> None:
    # every real-data config: root ../shared/data, each client's relative folder below it, so
    # `--data.init_args.root /my/copy` points all of them at a copy with the same layout
    import yaml

    real = [p for p in (REPO_ROOT / "datamodules").glob("*.yaml") if "phantom" not in p.name]
    assert len(real) >= 6
    for path in real:
        args = yaml.safe_load(path.read_text())["init_args"]
        folders = [c["data"]["init_args"]["root"] for c in args["clients"]]
        assert args["root"] == "../shared/data", path.name
        assert all(f and f != "." and not f.startswith(("/", "..")) for f in folders), path.name
