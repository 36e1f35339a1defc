"""The federated scenario: client naming, partitions, channel conversion, loaders, errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from torch import nn

from omnifm.datamodules import (
    ClientSource,
    ClientSubset,
    FederatedDataModule,
    MedMNISTDataModule,
    Partition,
    PhantomDataModule,
    UnknownClientError,
)
from omnifm.functional.image import LUMA_601


def _phantom(modality: str = "ct", size: int = 16, n: int = 24) -> PhantomDataModule:
    return PhantomDataModule(modality, num_train=n, num_val=8, num_test=8, size=size)


def _scenario(**kwargs: Any) -> FederatedDataModule:
    clients = [
        ClientSource("ct", _phantom("ct"), partition=Partition("iid", sites=3)),
        ClientSource("path", _phantom("pathology"), modality="histopathology"),
    ]
    return FederatedDataModule(clients, batch_size=5, **kwargs)


def test_sites_expand_into_named_clients_with_modalities() -> None:
    scenario = _scenario()

    infos = scenario.clients

    assert scenario.client_names() == ["ct-0", "ct-1", "ct-2", "path"]
    assert [info.modality for info in infos] == ["ct", "ct", "ct", "histopathology"]
    assert [info.num_train for info in infos] == [8, 8, 8, 24]
    assert sum(info.num_test for info in infos[:3]) == 8
    assert scenario.modality("ct-1") == "ct"
    assert (scenario.num_classes, scenario.task_type, scenario.in_channels) == (
        4,
        "multi-class",
        3,
    )


def _site_indices(scenario: FederatedDataModule) -> list[np.ndarray]:
    subsets = [scenario.dataset(f"ct-{i}", "train") for i in range(3)]
    return [s.indices for s in subsets if isinstance(s, ClientSubset)]


def test_partitions_are_disjoint_and_deterministic() -> None:
    first, again, other = _scenario(), _scenario(), _scenario(seed=5)

    parts, again_parts, other_parts = (_site_indices(s) for s in (first, again, other))

    assert len(parts) == 3
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(24))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again_parts, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other_parts, strict=True))


def test_grey_images_repeat_to_three_channels_and_rgb_becomes_luma() -> None:
    rgb = _scenario()
    grey = _scenario(in_channels=1)

    ct_item = rgb.dataset("ct-0", "val")[0]
    path_rgb = rgb.dataset("path", "val")[1]["image"]
    path_grey = grey.dataset("path", "val")[1]["image"]

    assert ct_item["image"].shape == (3, 16, 16) and set(ct_item) == {"image", "label", "mask"}
    assert torch.equal(ct_item["image"][0], ct_item["image"][2])
    weights = torch.tensor(LUMA_601)[:, None, None]
    assert path_grey.shape == (1, 16, 16)
    assert torch.allclose(path_grey[0], (path_rgb * weights).sum(0), atol=1e-6)


def test_client_loaders_yield_each_clients_examples() -> None:
    scenario = _scenario()

    module = scenario.client_datamodule("ct-2")
    counts = {
        name: sum(len(b["label"]) for b in loader())
        for name, loader in [
            ("train", module.train_dataloader),
            ("val", module.val_dataloader),
            ("test", module.test_dataloader),
        ]
    }

    assert counts == {"train": 8, "val": 2, "test": 2}
    assert module.name == "ct-2" and module.modality == "ct"
    assert scenario.client_datamodule("ct-2") is module
    assert sum(len(b["label"]) for b in scenario.train_dataloader()) == 48
    assert sum(len(b["label"]) for b in scenario.test_dataloader()) == 16


def test_client_train_order_is_seeded_and_resumable() -> None:
    order = [_train_order(_scenario()) for _ in range(2)]
    module = _scenario().client_datamodule("path")
    state = module.state_dict()
    first = _labels_in_order(module)
    module.load_state_dict(state)

    assert order[0] == order[1]
    assert _labels_in_order(module) == first


def _labels_in_order(module: LightningDataModule) -> list[int]:
    return torch.cat([b["label"] for b in module.train_dataloader()]).tolist()


def _train_order(scenario: FederatedDataModule) -> list[int]:
    return _labels_in_order(scenario.client_datamodule("path"))


def test_unknown_client_lists_the_known_ones() -> None:
    scenario = _scenario()

    with pytest.raises(KeyError) as error:
        scenario.dataset("ct-3", "train")

    assert isinstance(error.value, UnknownClientError)
    assert str(error.value) == (
        "unknown client 'ct-3'; known clients: ['ct-0', 'ct-1', 'ct-2', 'path']"
    )


def test_duplicate_client_names_raise() -> None:
    clients = [
        ClientSource("a", _phantom(), partition=Partition("iid", sites=2)),
        ClientSource("a-1", _phantom("mri")),
    ]

    with pytest.raises(ValueError, match=r"duplicate client names \['a-1'\]"):
        FederatedDataModule(clients)


def test_different_image_sizes_name_the_sources() -> None:
    scenario = FederatedDataModule(
        [ClientSource("small", _phantom(size=16)), ClientSource("large", _phantom(size=20))]
    )

    with pytest.raises(ValueError, match="'small' 16x16, 'large' 20x20"):
        scenario.setup()


def test_too_many_sites_names_source_and_split() -> None:
    clients = [ClientSource("ct", _phantom(n=24), partition=Partition("iid", sites=6))]

    with pytest.raises(ValueError, match="source 'ct' split 'val': site .* gets 1 example"):
        FederatedDataModule(clients).setup()


def test_label_sets_must_agree_unless_disjoint(tmp_path: Path) -> None:
    (tmp_path / "fake").mkdir()
    rng = np.random.default_rng(0)
    for flag in ("breastmnist", "retinamnist"):
        arrays = {}
        for split in ("train", "val", "test"):
            arrays[f"{split}_images"] = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
            arrays[f"{split}_labels"] = np.array([[0], [1], [1], [0]], dtype=np.uint8)
        np.savez(tmp_path / "fake" / f"{flag}.npz", **arrays)

    def sources() -> list[ClientSource]:
        return [
            ClientSource(flag, MedMNISTDataModule(flag, root="fake"))
            for flag in ("breastmnist", "retinamnist")
        ]

    with pytest.raises(ValueError, match="same num_classes .* set label_space: disjoint"):
        FederatedDataModule(sources(), root=str(tmp_path))
    scenario = FederatedDataModule(sources(), root=str(tmp_path), label_space="disjoint")
    breast, retina = scenario.clients
    labels = [int(scenario.dataset("retinamnist", "val")[i]["label"]) for i in range(4)]

    assert (scenario.num_classes, scenario.task_type) == (7, "multi-class")
    assert (breast.label_offset, breast.num_classes) == (0, 2)
    assert (retina.label_offset, retina.num_classes) == (2, 5)
    assert labels == [2, 3, 3, 2]
    assert scenario.sources[0].data.root == os.path.join(str(tmp_path), "fake")


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ([], "clients is empty"),
        (["ct"], "each client must be a ClientSource"),
    ],
)
def test_bad_client_lists_raise(clients: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FederatedDataModule(clients)


class _TinyClassifier(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self.net(batch["image"]), batch["label"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_plain_trainer_fits_on_the_union_and_on_one_client() -> None:
    scenario = _scenario()
    for datamodule in (scenario, scenario.client_datamodule("ct-0")):
        trainer = Trainer(fast_dev_run=2, logger=False, enable_progress_bar=False)
        trainer.fit(_TinyClassifier(), datamodule=datamodule)

        assert trainer.state.finished


class _Unmounted(PhantomDataModule):
    """Phantoms whose folder is gone: building a split raises as a folder reader would."""

    def _build(self, split):
        raise FileNotFoundError(f"image folder /mnt/{self.modality}/images not found")


def test_a_source_whose_files_are_gone_leaves_only_its_clients_out(caplog) -> None:
    # Prepare
    clients = [
        ClientSource("ok", _phantom("ct")),
        ClientSource("gone", _Unmounted(modality="mri", size=16), partition=Partition("iid", 2)),
    ]
    scenario = FederatedDataModule(clients, in_channels=1)
    # Execute
    scenario.setup()
    # Assert: the others are set up; any use of a missing client names it, the folder and why
    assert len(scenario.dataset("ok", "train")) == 24
    assert "clients ['gone-0', 'gone-1'] (source 'gone'): image folder /mnt/mri" in caplog.text
    assert "left out of every round" in caplog.text
    loader = scenario.client_datamodule("gone-1").train_dataloader
    with pytest.raises(FileNotFoundError, match=r"'gone-1'.*image folder /mnt/mri/images"):
        loader()
    # nothing to federate at all: the first error stops the setup
    alone = FederatedDataModule([ClientSource("gone", _Unmounted(modality="mri", size=16))])
    with pytest.raises(FileNotFoundError, match=r"^client 'gone': image folder /mnt/mri"):
        alone.setup()
