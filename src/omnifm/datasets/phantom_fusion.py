"""Generated phantom data for fusion: one phantom scene rendered as MRI and as CT, PET or SPECT
(co-registered pairs). No files; every pair is a pure function of its seed."""

from __future__ import annotations

from typing import Literal

import matplotlib
import numpy as np

from omnifm.datasets.base import Split
from omnifm.datasets.fusion_pairs import PairDataset
from omnifm.datasets.phantom import blur, render_scenes

__all__ = ["FUSION_PARTNERS", "FusionPartner", "phantom_pairs", "pseudo_colour"]

FusionPartner = Literal["ct", "pet", "spect"]
FUSION_PARTNERS: tuple[str, ...] = ("ct", "pet", "spect")


def pseudo_colour(ct: np.ndarray, mask: np.ndarray, partner: str) -> np.ndarray:
    """PET- or SPECT-like RGB (B, S, S, 3): blurred tracer uptake, high in the structure, low
    in the tissue (from the CT rendering), through matplotlib's ``hot`` (PET) or ``jet``
    (SPECT) colour map; SPECT is blurrier, as its resolution is lower."""
    sigma = ct.shape[-1] / (24 if partner == "pet" else 14)
    uptake = blur(0.8 * mask.astype(np.float32) + 0.35 * ct, sigma)
    uptake = uptake / max(float(uptake.max()), 1e-6)
    cmap = matplotlib.colormaps["hot" if partner == "pet" else "jet"]
    rgb = cmap(np.clip(uptake, 0, 1))[..., :3]
    return np.where(uptake[..., None] > 0.05, rgb, 0.0).astype(np.float32)


def phantom_pairs(partner: str, size: int, seed: int, split: Split, count: int) -> PairDataset:
    """`count` scenes of (seed, split) as MRI (``"image"``) and `partner` (``"partner"``, RGB:
    grey CT repeated, PET or SPECT by ``pseudo_colour``), named ``{split}-{i}``."""
    images, _, masks = render_scenes(["mri", "ct"], size, seed, split, range(count))
    ct = images["ct"][..., 0]
    if partner == "ct":
        second = np.repeat(ct[..., None], 3, axis=-1)
    else:
        second = pseudo_colour(ct, masks, partner)
    first = (images["mri"][..., 0] * 255).round().astype(np.uint8)
    second = (second * 255).round().astype(np.uint8)
    return PairDataset(first, second, [f"{split}-{i}" for i in range(count)])
