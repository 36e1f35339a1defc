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
from omnifm.datamodules.fusion_pairs import FusionPairsDataModule
from omnifm.datamodules.medmnist import MedMNISTDataModule
from omnifm.datamodules.partition import Partition, dirichlet_split, iid_split, split_indices
from omnifm.datamodules.phantom import (
    PHANTOM_CLASSES,
    PhantomDataModule,
    generate_phantoms,
    render_scenes,
)
from omnifm.datamodules.phantom_dense import (
    PhantomSegmentationDataModule,
    PhantomSuperResolutionDataModule,
)
from omnifm.datamodules.phantom_tasks import (
    PHANTOM_ANSWERS,
    PhantomFusionDataModule,
    PhantomVQADataModule,
)
from omnifm.datamodules.segmentation import SegmentationFolderDataModule, pair_files
from omnifm.datamodules.super_resolution import (
    LowResPairs,
    SuperResolutionDataModule,
    downsample,
    parse_breakhis,
)
from omnifm.datamodules.vqa_rad import VQARADDataModule, normalize_answer

__all__ = [
    "PHANTOM_ANSWERS",
    "PHANTOM_CLASSES",
    "ArrayDataset",
    "ClientDataModule",
    "ClientInfo",
    "ClientSource",
    "ClientSubset",
    "FederatedDataModule",
    "FusionPairsDataModule",
    "LowResPairs",
    "MedMNISTDataModule",
    "Partition",
    "PhantomDataModule",
    "PhantomFusionDataModule",
    "PhantomSegmentationDataModule",
    "PhantomSuperResolutionDataModule",
    "PhantomVQADataModule",
    "SegmentationFolderDataModule",
    "SourceDataModule",
    "SuperResolutionDataModule",
    "TaskType",
    "UnknownClientError",
    "VQARADDataModule",
    "dirichlet_split",
    "downsample",
    "generate_phantoms",
    "iid_split",
    "normalize_answer",
    "pair_files",
    "parse_breakhis",
    "reduce_labels",
    "render_scenes",
    "split_indices",
    "to_channels",
]
