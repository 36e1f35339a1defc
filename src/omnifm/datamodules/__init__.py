"""LightningDataModules and datasets: image sources, client partitioning, phantom data."""

from omnifm.datamodules.base import (
    ArrayDataset,
    SourceDataModule,
    TaskType,
    reduce_labels,
    to_channels,
)
from omnifm.datamodules.federated import (
    ClientDataModule,
    ClientInfo,
    ClientSource,
    ClientSubset,
    FederatedDataModule,
    UnknownClientError,
)
from omnifm.datamodules.medmnist import MedMNISTDataModule
from omnifm.datamodules.partition import Partition, dirichlet_split, iid_split, split_indices
from omnifm.datamodules.phantom import PHANTOM_CLASSES, PhantomDataModule, generate_phantoms

__all__ = [
    "PHANTOM_CLASSES",
    "ArrayDataset",
    "ClientDataModule",
    "ClientInfo",
    "ClientSource",
    "ClientSubset",
    "FederatedDataModule",
    "MedMNISTDataModule",
    "Partition",
    "PhantomDataModule",
    "SourceDataModule",
    "TaskType",
    "UnknownClientError",
    "dirichlet_split",
    "generate_phantoms",
    "iid_split",
    "reduce_labels",
    "split_indices",
    "to_channels",
]
