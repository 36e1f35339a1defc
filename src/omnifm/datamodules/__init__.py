"""LightningDataModules: image sources with their splits and dataloaders, and the federated
scenario that makes clients of them. Datasets, file readers and phantom generators live in
``omnifm.datasets``; the ones users name are re-exported here."""

from omnifm.datamodules.base import SourceDataModule
from omnifm.datamodules.federated import (
    ClientDataModule,
    ClientInfo,
    ClientSource,
    FederatedDataModule,
    UnknownClientError,
)
from omnifm.datamodules.fusion_pairs import FusionPairsDataModule
from omnifm.datamodules.medmnist import MedMNISTDataModule
from omnifm.datamodules.multitask import MultiTaskDataModule
from omnifm.datamodules.phantom import PhantomDataModule
from omnifm.datamodules.phantom_dense import (
    PhantomSegmentationDataModule,
    PhantomSuperResolutionDataModule,
)
from omnifm.datamodules.phantom_tasks import PhantomFusionDataModule, PhantomVQADataModule
from omnifm.datamodules.segmentation import SegmentationFolderDataModule
from omnifm.datamodules.subjects import SubjectFolderDataModule
from omnifm.datamodules.super_resolution import SuperResolutionDataModule
from omnifm.datamodules.vqa_rad import VQARADDataModule
from omnifm.datasets import (
    PHANTOM_ANSWERS,
    PHANTOM_CLASSES,
    ArrayDataset,
    ClientSubset,
    LowResPairs,
    Partition,
    TaskType,
    dirichlet_split,
    downsample,
    generate_phantoms,
    iid_split,
    normalize_answer,
    pair_files,
    parse_breakhis,
    reduce_labels,
    render_scenes,
    split_indices,
)
from omnifm.functional import to_channels

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
    "MultiTaskDataModule",
    "Partition",
    "PhantomDataModule",
    "PhantomFusionDataModule",
    "PhantomSegmentationDataModule",
    "PhantomSuperResolutionDataModule",
    "PhantomVQADataModule",
    "SegmentationFolderDataModule",
    "SourceDataModule",
    "SubjectFolderDataModule",
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
