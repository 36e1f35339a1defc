"""The federated scenario: image sources split into clients, each with a modality tag."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from omnifm.datamodules.base import SourceDataModule
from omnifm.datasets.base import SPLITS, Split, TaskType, check_split
from omnifm.datasets.client import ClientSubset
from omnifm.datasets.errors import Unavailable, naming
from omnifm.datasets.partition import Partition, derive_seed, split_indices
from omnifm.functional import can_convert

log = logging.getLogger("omnifm")


@dataclass
class ClientSource:
    """One source of the scenario: client `name` (or name prefix when split into sites)."""

    name: str
    data: SourceDataModule
    modality: str | None = None
    partition: Partition = field(default_factory=Partition)


@dataclass(frozen=True)
class ClientInfo:
    """What the scenario knows about one client after setup."""

    name: str
    modality: str
    num_train: int
    num_val: int
    num_test: int
    label_offset: int = 0
    num_classes: int | None = None  # the client's own classes; None: all of the scenario's


class UnknownClientError(KeyError):
    """A client name that the scenario does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


class ClientDataModule(LightningDataModule):
    """One client's train/val/test subsets; train is shuffled by its own seeded generator."""

    def __init__(
        self,
        name: str,
        modality: str,
        datasets: dict[Split, Dataset],
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        self.modality = modality
        self.datasets = datasets
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.generator = torch.Generator().manual_seed(seed)

    def _loader(self, split: Split) -> DataLoader:
        train = split == "train"
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            generator=self.generator if train else None,
        )

    def reseed(self, seed: int) -> None:
        """Restart the training shuffle from ``seed`` (the federation does so every round)."""
        self.generator.manual_seed(seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state, so a resumed run shuffles the same way."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.set_state(state_dict["generator"])


def _agree(sources: list[ClientSource], what: str) -> Any:
    """The value of attribute `what` that every source's data shares, else a ValueError."""
    values = {source.name: getattr(source.data, what) for source in sources}
    if len(set(values.values())) > 1:
        raise ValueError(
            f"all sources must have the same {what} when label_space is 'shared', got {values}; "
            "set label_space: disjoint to give each source its own label range"
        )
    return next(iter(values.values()))


def _label_offsets(sources: list[ClientSource], label_space: LabelSpace) -> list[int]:
    """Where each source's labels start in the scenario's label space."""
    if label_space == "shared":
        return [0] * len(sources)
    multi = [s.name for s in sources if s.data.task_type == "multi-label"]
    if multi:
        raise ValueError(f"label_space 'disjoint' needs single-label sources; {multi} are not")
    return [int(x) for x in np.cumsum([0] + [s.data.num_classes for s in sources[:-1]])]


def _client_owners(sources: list[ClientSource]) -> dict[str, tuple[int, int]]:
    """Each client's name -> (source index, site): `name`, or `name-0`, `name-1`, ..."""
    names = [
        (source.name if source.partition.sites == 1 else f"{source.name}-{site}", i, site)
        for i, source in enumerate(sources)
        for site in range(source.partition.sites)
    ]
    repeated = sorted(n for n, k in Counter(n for n, _, _ in names).items() if k > 1)
    if repeated:
        raise ValueError(f"duplicate client names {repeated}; give each source its own name")
    return {name: (i, site) for name, i, site in names}


LabelSpace = Literal["shared", "disjoint"]


class FederatedDataModule(LightningDataModule):
    """The federated scenario: clients with a modality tag and their own data.

    A source with `partition.sites == 1` gives one client named `name`; more sites give
    `name-0`, `name-1`, ... Every client's images are converted to `in_channels` (default: the
    most over sources). Relative source roots are resolved against `root`. The dataloaders of
    this module are the union of all clients (the centralised reference).

    label_space: "shared": all sources have the same classes and task type; "disjoint": each
    source's classes get their own range after the previous source's (labels shifted), giving
    one multi-class task over the sum of classes (e.g. 2 + 5 + 2 = 9 for breast, retina and
    pneumonia MedMNIST).
    """

    def __init__(
        self,
        clients: list[ClientSource],
        root: str = ".",
        in_channels: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        label_space: LabelSpace = "shared",
    ) -> None:
        super().__init__()
        if not clients:
            raise ValueError("clients is empty; give at least one ClientSource")
        for source in clients:
            if not isinstance(source, ClientSource) or not isinstance(
                source.data, SourceDataModule
            ):
                raise ValueError(
                    f"each client must be a ClientSource whose data is a SourceDataModule, "
                    f"got {source!r}"
                )
        if seed < 0 or batch_size < 1 or num_workers < 0 or (in_channels or 1) < 1:
            raise ValueError(
                "need seed >= 0, batch_size >= 1, num_workers >= 0 and in_channels >= 1 or None, "
                f"got {seed}, {batch_size}, {num_workers} and {in_channels}"
            )
        self.sources = list(clients)
        self.root = root
        self._owners = _client_owners(self.sources)
        for i, source in enumerate(self.sources):
            with self._naming(i):  # first: a source may read its class count from its files
                source.data.with_root(root)
                source.data.num_classes, source.data.in_channels  # noqa: B018
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        if label_space not in ("shared", "disjoint"):
            raise ValueError(f"unknown label_space {label_space!r}; use 'shared' or 'disjoint'")
        self.label_space = label_space
        self._offsets = _label_offsets(self.sources, label_space)
        if label_space == "shared":
            self._num_classes: int = _agree(self.sources, "num_classes")
            self._task_type: TaskType = _agree(self.sources, "task_type")
        else:
            self._num_classes = self._offsets[-1] + self.sources[-1].data.num_classes
            self._task_type = "multi-class"
        self._in_channels = in_channels or max(s.data.in_channels for s in self.sources)
        for source in self.sources:
            if not can_convert(source.data.in_channels, self._in_channels):
                raise ValueError(
                    f"source {source.name!r} has {source.data.in_channels} channels, which "
                    f"cannot be converted to in_channels={self._in_channels}; "
                    "use in_channels 1, 3 or the source's own channel count"
                )
        self._subsets: dict[str, dict[Split, ClientSubset]] = {}
        self._ready: set[int] = set()  # sources already partitioned
        self._client_modules: dict[str, ClientDataModule] = {}

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def task_type(self) -> TaskType:
        return self._task_type

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def questions(self) -> list[str]:
        """The training questions of every source that has them (VQA), in client order.

        What ``VQATask``'s default tokenizer is built from (linked by the CLI): in a federation
        the union of the clients' training questions, shared once before training.
        """
        return [q for source in self.sources for q in getattr(source.data, "questions", [])]

    def client_names(self) -> list[str]:
        """Every client's name, in order."""
        return list(self._owners)

    def _source(self, client: str) -> ClientSource:
        if client not in self._owners:
            raise UnknownClientError(
                f"unknown client {client!r}; known clients: {self.client_names()}"
            )
        return self.sources[self._owners[client][0]]

    def modality(self, client: str) -> str:
        """The modality tag of `client`."""
        source = self._source(client)
        return source.modality or source.data.modality

    def _naming(self, i: int) -> Any:
        """A context naming the client(s) of source ``i`` in any error raised inside."""
        names = [name for name, (owner, _) in self._owners.items() if owner == i]
        if len(names) == 1:
            return naming(f"client {names[0]!r}")
        return naming(f"clients {names} (source {self.sources[i].name!r})")

    def prepare_data(self) -> None:
        """Let every source fetch its files (e.g. MedMNIST with `download: true`)."""
        for i, source in enumerate(self.sources):
            with self._naming(i):
                source.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Partition every split of every source among its sites (once; deterministic)."""
        if len(self._ready) == len(self.sources):
            return
        self._check_sizes()
        missing: dict[int, OSError] = {}
        for i in range(len(self.sources)):
            try:
                self._setup_source(i)
            except OSError as err:  # files gone or unreadable: leave its clients out, not all
                missing[i] = err
        if len(missing) == len(self.sources):
            raise next(iter(missing.values()))
        for i, err in missing.items():
            log.warning("%s; its client(s) will be left out of every round", err)
            for name, (owner, _) in self._owners.items():
                if owner == i:
                    self._subsets[name] = {split: Unavailable(err) for split in SPLITS}
            self._ready.add(i)

    def _setup_source(self, i: int) -> None:
        """Partition every split of source ``i`` among its sites."""
        if i in self._ready:
            return
        with self._naming(i):
            self._partition(i)
        self._ready.add(i)

    def _partition(self, i: int) -> None:
        source = self.sources[i]
        for split_id, split in enumerate(SPLITS):
            data = source.data.dataset(split)
            # Only a Dirichlet split reads labels; the others need just the count.
            if source.partition.kind == "dirichlet":
                labels = source.data.labels(split)
            else:
                labels = np.zeros(len(data), dtype=np.int64)
            parts = split_indices(
                source.partition,
                labels,
                derive_seed(self.seed, i, split_id),
                what=f"source {source.name!r} split {split!r}",
            )
            for name, (owner, site) in self._owners.items():
                if owner == i:
                    self._subsets.setdefault(name, {})[split] = ClientSubset(
                        data, parts[site], self._in_channels, self._offsets[i], name
                    )

    def _check_sizes(self) -> None:
        known: dict[str, tuple[int, ...]] = {}
        for i, source in enumerate(self.sources):
            try:
                with self._naming(i):
                    data = source.data.dataset("train")
                    if len(data):
                        known[source.name] = tuple(data[0]["image"].shape[-2:])
            except OSError:  # unreadable files: setup reports them, naming the client
                continue
        if len(set(known.values())) > 1:
            shown = ", ".join(f"{name!r} {h}x{w}" for name, (h, w) in known.items())
            raise ValueError(
                f"sources have different image sizes: {shown}; give every source the same size"
            )

    @property
    def clients(self) -> list[ClientInfo]:
        """Every client's name, modality and example counts (sets up on first use)."""
        self.setup()
        return [
            ClientInfo(
                name,
                self.modality(name),
                *(len(self._subsets[name][split]) for split in SPLITS),
                label_offset=self._offsets[owner],
                num_classes=self.sources[owner].data.num_classes,
            )
            for name, (owner, _) in self._owners.items()
        ]

    def dataset(self, client: str, split: Split) -> Dataset:
        """The examples of `client` in `split`."""
        self._source(client)
        self.setup()
        return self._subsets[client][check_split(split)]

    def client_datamodule(self, client: str) -> ClientDataModule:
        """A LightningDataModule over `client`'s subsets (one per client, kept)."""
        self._source(client)
        self.setup()
        return self._client_module(client)

    def site_datamodule(self, client: str) -> ClientDataModule:
        """`client_datamodule(client)` reading only the client's own source: what one site of a
        real deployment holds (the other sources' files need not exist there). Same examples
        and shuffling; the check that all sources share one image size is skipped."""
        self._source(client)  # an unknown name raises
        i = self._owners[client][0]
        with self._naming(i):
            self.sources[i].data.prepare_data()
        self._setup_source(i)
        return self._client_module(client)

    def _client_module(self, client: str) -> ClientDataModule:
        if client not in self._client_modules:
            self._client_modules[client] = ClientDataModule(
                client,
                self.modality(client),
                self._subsets[client],
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                seed=self.seed + self.client_names().index(client),
            )
        return self._client_modules[client]

    def _union(self, split: Split) -> DataLoader:
        self.setup()
        train = split == "train"
        return DataLoader(
            ConcatDataset([self._subsets[name][split] for name in self._owners]),
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._union("train")

    def val_dataloader(self) -> DataLoader:
        return self._union("val")

    def test_dataloader(self) -> DataLoader:
        return self._union("test")
