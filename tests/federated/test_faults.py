"""Fault injection: a federation in which, across rounds, one client raises, one returns NaN,
one's data folder disappears, the process is killed mid-round and resumed, and a validate and a
test run in between. It must end as a run with the same faults that was never killed."""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from omnifm.datamodules import ClientSource, FederatedDataModule, PhantomDataModule
from omnifm.federated import Federation, OmniFM

from .helpers import tiny_federation

ROUNDS = 2
CLIENTS = ("ok", "crash", "nan", "gone")


class Schedule:
    """The round the federation is fitting (0 outside local fits): when each fault strikes."""

    round = 0


class Scheduled(Dataset):
    """A phantom split hit by its client's fault: ``crash`` raises and ``nan`` gives NaN
    images while fitting round 1; ``gone`` reads a folder that disappears before round 2."""

    def __init__(self, base: Dataset, client: str, schedule: Schedule, folder: Path) -> None:
        self.base, self.client, self.schedule, self.folder = base, client, schedule, folder

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        if self.client == "crash" and self.schedule.round == 1:
            raise OSError("PACS export of this hospital is offline")
        if self.client == "gone" and not self.folder.is_dir():
            raise FileNotFoundError(f"data folder {self.folder} not found")
        item = dict(self.base[index])
        if self.client == "nan" and self.schedule.round == 1:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


class ScheduledPhantom(PhantomDataModule):
    def __init__(self, client: str, schedule: Schedule, folder: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.client, self.schedule, self.folder = client, schedule, folder

    def _build(self, split):
        if self.client == "gone" and not self.folder.is_dir():  # as a folder reader lists files
            raise FileNotFoundError(f"data folder {self.folder} not found")
        return Scheduled(super()._build(split), self.client, self.schedule, self.folder)


class Killed(BaseException):
    """The process dies (not an ``Exception``: no client-level handler catches it)."""


def faulty_run(folder: Path, kill_in: int | None = None) -> Federation:
    """A fresh process's federation over ``folder`` (run folders and the ``gone`` data);
    ``kill_in``: the process dies in that round, before the ``nan`` client's fit."""
    schedule = Schedule()
    data_dir = folder / "gone_data"
    sources = [
        ClientSource(
            name,
            ScheduledPhantom(
                name, schedule, data_dir, modality=m, num_train=8, num_val=8, num_test=8, size=16
            ),
        )
        for name, m in zip(CLIENTS, ("ct", "mri", "ultrasound", "ct"), strict=True)
    ]
    data = FederatedDataModule(sources, in_channels=1, batch_size=8)
    run = tiny_federation(folder, OmniFM(), rounds=ROUNDS, data=data, min_clients=1)
    fit_clients = run.fit_clients

    def scheduled(round_: int, chosen: list[str]) -> Iterator[tuple]:
        if round_ == 2:  # the hospital's share is unmounted before round 2
            shutil.rmtree(data_dir, ignore_errors=True)
        schedule.round = round_
        try:
            yield from fit_clients(round_, chosen)
        finally:
            schedule.round = 0

    run.fit_clients = scheduled  # type: ignore[method-assign]
    if kill_in is not None:
        fit = run.clients["nan"].fit

        def dies(model, ins, *args, **kwargs):
            if ins.round == kill_in:
                raise Killed
            return fit(model, ins, *args, **kwargs)

        run.clients["nan"].fit = dies  # type: ignore[method-assign]
    return run


def read(path: Path) -> list[dict[str, str]]:
    return read_text(path.read_text())


def read_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_faults_kill_and_resume_end_as_an_uninterrupted_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the never-killed run, with the same faults
    for folder in (tmp_path / "a", tmp_path / "b"):
        (folder / "gone_data").mkdir(parents=True)
    full = faulty_run(tmp_path / "a")
    full.fit()
    run_dir = tmp_path / "b" / "test" / "version_0"
    record = [run_dir / "history.csv", run_dir / "checkpoints" / "last.pt"]

    # Execute: killed in round 2 (after two clients trained), then validate and test the last
    # checkpoint, then resume in a fresh process (where the folder is still gone)
    with pytest.raises(Killed):
        faulty_run(tmp_path / "b", kill_in=2).fit()
    written = [p.read_bytes() for p in record]
    faulty_run(tmp_path / "b").validate("last")
    faulty_run(tmp_path / "b").test("last")
    unchanged = [p.read_bytes() for p in record] == written
    resumed = faulty_run(tmp_path / "b")
    resumed.fit(ckpt_path="last")

    # Assert: every fault was reported with its client, and left out of its round
    assert unchanged  # validate and test after the fact changed nothing the run had written
    text = caplog.text
    assert "crash failed and is left out of round 1" in text and "PACS export" in text
    assert "nan failed and is left out of round 1" in text and "non-finite" in text
    assert "gone failed and is left out of round 2" in text
    assert "client 'gone': data folder" in text and "gone_data not found" in text
    # the resumed run ends with the weights, personal states and bank of the uninterrupted one
    for key, value in full.server.shared.items():
        assert torch.equal(value, resumed.server.shared[key]), key
    for name in full.clients:
        mine, other = full.personal_state(name), resumed.personal_state(name)
        assert (mine is None) == (other is None), name
        for key, value in (mine or {}).items():
            assert torch.equal(value, other[key]), (name, key)
    assert torch.equal(full.server.bank.vectors, resumed.server.bank.vectors)
    # history.csv holds every round exactly once per stage and client, as the uninterrupted
    history = read(run_dir / "history.csv")
    counts = Counter((r["round"], r["stage"], r["client"]) for r in history)
    assert set(counts.values()) == {1}
    for stage, rounds in (("validate", range(1, ROUNDS + 1)), ("test", [ROUNDS])):
        for round_ in rounds:
            for client in (*CLIENTS, "mean"):
                assert counts[(str(round_), stage, client)] == 1, (round_, stage, client)
    uninterrupted = (tmp_path / "a" / "test" / "version_0" / "history.csv").read_text()
    assert history == read_text(uninterrupted.replace(str(tmp_path / "a"), str(tmp_path / "b")))
    # the evaluations in between were written beside the run's record
    for stage in ("validate", "test"):
        rows = read(run_dir / f"history_{stage}.csv")
        assert [(r["round"], r["client"]) for r in rows] == [("1", c) for c in (*CLIENTS, "mean")]
    gone = next(r for r in history if r["client"] == "gone" and r["stage"] == "test")
    assert "gone_data not found" in gone["error"]
