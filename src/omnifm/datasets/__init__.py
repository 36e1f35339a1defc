"""Datasets: what an item is and how files are read, with no Lightning.

Data come in two levels, as in torchgeo. ``omnifm.datasets`` (this package) holds the torch
``Dataset`` classes (what one item holds), the readers of files (MedMNIST, VQA-RAD, image and
mask folders, BreaKHis names, NIfTI volumes), the phantom generators, the split and partition
arithmetic and the data errors. ``omnifm.datamodules`` builds on it: LightningDataModules that
choose the splits, build these datasets, give the dataloaders, and make the federation's
clients. This package never imports ``omnifm.datamodules``.
"""

from omnifm.datasets.array import ArrayDataset, reduce_labels
from omnifm.datasets.base import SPLITS, Split, TaskType, check_split
from omnifm.datasets.breakhis import BREAKHIS_FIELDS, image_files, parse_breakhis
from omnifm.datasets.client import ClientSubset
from omnifm.datasets.errors import Unavailable, naming
from omnifm.datasets.fusion_pairs import PairDataset, pair_folders, pair_names, read_resized
from omnifm.datasets.medmnist import medmnist_filename, read_medmnist
from omnifm.datasets.partition import Partition, dirichlet_split, iid_split, split_indices
from omnifm.datasets.phantom import (
    PHANTOM_CLASSES,
    PHANTOM_MODALITIES,
    PhantomModality,
    generate_phantoms,
    render_scenes,
)
from omnifm.datasets.phantom_fusion import FusionPartner, phantom_pairs, pseudo_colour
from omnifm.datasets.phantom_vqa import PHANTOM_ANSWERS, phantom_qa, phantom_records, phantom_vqa
from omnifm.datasets.readers import ImageReader, decode, open_image, volume_loader
from omnifm.datasets.segmentation import PairReader, SegmentationPairs, pair_files
from omnifm.datasets.splits import check_fractions, split_items
from omnifm.datasets.super_resolution import LowResPairs, PatchPairs, downsample
from omnifm.datasets.vqa_rad import VQADataset, normalize_answer, read_records

__all__ = [
    "BREAKHIS_FIELDS",
    "PHANTOM_ANSWERS",
    "PHANTOM_CLASSES",
    "PHANTOM_MODALITIES",
    "SPLITS",
    "ArrayDataset",
    "ClientSubset",
    "FusionPartner",
    "ImageReader",
    "LowResPairs",
    "PairDataset",
    "PairReader",
    "Partition",
    "PatchPairs",
    "PhantomModality",
    "SegmentationPairs",
    "Split",
    "TaskType",
    "Unavailable",
    "VQADataset",
    "check_fractions",
    "check_split",
    "decode",
    "dirichlet_split",
    "downsample",
    "generate_phantoms",
    "iid_split",
    "image_files",
    "medmnist_filename",
    "naming",
    "normalize_answer",
    "open_image",
    "pair_files",
    "pair_folders",
    "pair_names",
    "parse_breakhis",
    "phantom_pairs",
    "phantom_qa",
    "phantom_records",
    "phantom_vqa",
    "pseudo_colour",
    "read_medmnist",
    "read_records",
    "read_resized",
    "reduce_labels",
    "render_scenes",
    "split_indices",
    "split_items",
    "volume_loader",
]
