from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from omnifm.datamodules import ClientSource, FederatedDataModule, PhantomDataModule
from omnifm.federated import (
    SCAFFOLD,
    Aggregator,
    Ditto,
    FedAdam,
    FedAvg,
    FederationError,
    FedPer,
    Mean,
    OmniFM,
    Strategy,
    TrimmedMean,
)
from omnifm.federated.checkpoint import load_checkpoint

from .helpers import capture_results, tiny_data, tiny_federation


class Crashing(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        if index >= 4:  # the first images load, then the export breaks mid-epoch
            raise OSError("PACS export of this hospital is offline")
        return {"image": torch.rand(1, 16, 16), "label": torch.tensor(0)}


class NaNImages(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        item["image"] = torch.full_like(item["image"], float("nan"))
        return item


class FaultyPhantom(PhantomDataModule):
    """Phantoms whose training split crashes or is all NaN; validation and test are fine."""

    def __init__(self, fault: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault = fault

    def _build(self, split):
        data = super()._build(split)
        if split != "train":
            return data
        return Crashing() if self.fault == "crash" else NaNImages(data)


def faulty_data() -> FederatedDataModule:
    data = tiny_data(("ct", "mri"))
    kwargs = {"num_train": 16, "num_val": 8, "num_test": 8, "size": 16}
    data.sources += [
        ClientSource("crash", FaultyPhantom("crash", modality="xray", **kwargs)),
        ClientSource("nan", FaultyPhantom("nan", modality="pathology", **kwargs)),
    ]
    return FederatedDataModule(data.sources, in_channels=1, batch_size=8)


def test_personal_parameters_never_leave_a_client(tmp_path: Path) -> None:
    # Prepare
    run = tiny_federation(tmp_path, FedPer(), rounds=2)
    sent = capture_results(run)
    # Execute
    run.fit()
    # Assert
    personal = {"head.weight", "head.bias"}
    assert len(sent) == 6 and all(personal.isdisjoint(r.weights) for r in sent)
    assert personal.isdisjoint(run.server.shared)
    heads = [run.personal_state(n)["head.weight"] for n in run.clients]
    assert not torch.equal(heads[0], heads[1])  # each client trained its own head
    assert all(h.device.type == "cpu" for h in heads)


def test_omnifm_run_fills_bank_logs_and_checkpoints(tmp_path: Path) -> None:
    run = tiny_federation(tmp_path, OmniFM(), rounds=2)
    rows = run.fit()
    assert [r["client"] for r in rows] == ["ct", "mri", "ultrasound", "mean"]
    assert 0.0 <= rows[-1]["test/acc"] <= 1.0
    bank = run.server.bank
    assert bank is not None and set(bank.modalities) == {"ct", "mri", "ultrasound"}
    assert int(bank.hits.sum()) > 0  # clients retrieved from the bank while training
    run_dir = tmp_path / "test" / "version_0"
    assert (run_dir / "results.csv").read_text().startswith("client,modality")
    assert list((run_dir / "clients" / "ct").glob("events.out.tfevents.*"))
    assert list((run_dir / "server").glob("events.out.tfevents.*"))
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # weights_only=True
    assert state["round"] == 2 and "personal/stack.psp.suffix" in state["clients"]["memory"]["ct"]


@pytest.mark.parametrize(
    ("strategy", "aggregator", "memory"),
    # FedAdam: server moments; SCAFFOLD: server and client control variates; Ditto: personal
    # models, spilled to disk past a budget of less than one client's (client_memory in MiB)
    [
        (OmniFM, Mean, None),
        (FedAdam, TrimmedMean, None),
        (SCAFFOLD, Mean, None),
        (Ditto, Mean, 0.01),
    ],
    ids=["OmniFM", "FedAdam-TrimmedMean", "SCAFFOLD", "Ditto-on-disk"],
)
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, strategy: type[Strategy], aggregator: type[Aggregator], memory: float | None
) -> None:
    # Prepare: an uninterrupted 3-round run, and one stopped after round 2
    kwargs = {"participation": 0.67, "eval_every": 10}  # validate only after the last round
    kwargs |= {"aggregator": aggregator(), "client_memory": memory}
    full = tiny_federation(tmp_path / "a", strategy(), rounds=3, **kwargs)
    full.fit()
    first = tiny_federation(tmp_path / "b", strategy(), rounds=2, **kwargs)
    first.fit()
    # Execute: a fresh process-like object resumes the second run for its last round
    resumed = tiny_federation(tmp_path / "b", strategy(), rounds=3, **kwargs)
    resumed.fit(ckpt_path="last")
    # Assert
    assert resumed.round == 3
    for key, value in full.server.shared.items():
        assert torch.equal(value, resumed.server.shared[key]), key
    for name in full.clients:
        mine, other = full.personal_state(name), resumed.personal_state(name)
        assert (mine is None) == (other is None)
        for key, value in (mine or {}).items():
            assert torch.equal(value, other[key]), (name, key)
        mine, other = full.strategy_state(name), resumed.strategy_state(name)
        assert mine.keys() == other.keys(), name
        assert all(torch.equal(v, other[k]) for k, v in mine.items()), name
    assert torch.equal(full.server.bank.vectors, resumed.server.bank.vectors)
    assert full.server.sampler.history == resumed.server.sampler.history
    if memory is not None:  # most personal models were on disk, and read back from there
        assert resumed.store.memory_bytes <= memory * 2**20
        assert list((tmp_path / "b" / "test" / "version_0" / "client_states").glob("*.safetensors"))
    for key, value in full.server.strategy.state_dict().items():  # server optimizer state
        other = resumed.server.strategy.state_dict()[key]
        if isinstance(value, dict):
            assert all(torch.equal(v, other[k]) for k, v in value.items()), key
        else:
            assert value == other, key


def test_crashing_and_nan_clients_are_left_out(tmp_path: Path, caplog) -> None:
    run = tiny_federation(
        tmp_path, OmniFM(), rounds=2, data=faulty_data(), min_clients=2, eval_every=10
    )
    sent = capture_results(run)
    rows = run.fit()
    assert sorted({r.client for r in sent}) == ["ct", "mri"]
    assert all(torch.isfinite(v).all() for v in run.server.shared.values() if v.is_floating_point())
    assert run.personal_state("nan") is None and run.personal_state("crash") is None
    assert "PACS export" in caplog.text and "non-finite" in caplog.text
    assert rows[-1]["client"] == "mean"


def test_too_few_clients_stops_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    ok = tiny_federation(tmp_path, FedAvg(), rounds=1, data=faulty_data())
    ok.fit()
    before = (tmp_path / "test" / "version_0" / "checkpoints" / "last.pt").read_bytes()
    strict = tiny_federation(tmp_path, FedAvg(), rounds=2, data=faulty_data(), min_clients=3)
    with pytest.raises(FederationError, match="2 of 4 clients succeeded.*min_clients=3"):
        strict.fit(ckpt_path="last")
    after = (tmp_path / "test" / "version_0" / "checkpoints" / "last.pt").read_bytes()
    assert before == after


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    run = tiny_federation(tmp_path, FedAvg(), rounds=1)
    with pytest.raises(FileNotFoundError, match="omnifm fit"):
        run.fit(ckpt_path="last")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        run.fit(ckpt_path=str(bad))


@pytest.mark.gpu
def test_two_rounds_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    run = tiny_federation(tmp_path, OmniFM(), rounds=2)
    # the helper's deterministic=True is for CPU runs: on CUDA, ResNet's adaptive average
    # pooling has no deterministic backward, and torch refuses it
    run.trainer_kwargs.update(accelerator="cuda", deterministic=False)
    rows = run.fit()
    assert rows[-1]["client"] == "mean" and 0.0 <= rows[-1]["test/acc"] <= 1.0
    assert all(v.device.type == "cpu" for v in run.server.shared.values())
