"""Phantom generators: one synthetic anatomy task rendered in several modality styles.

Each example shows one of four anatomy classes (a round organ, two lobes, a hollow ring, a
bent vessel) with random position, scale, rotation and intensity, among small distractor blobs,
and comes with the binary mask of the structure. The same task is rendered in the style of CT,
MRI, X-ray, ultrasound or H&E pathology, so one classifier can span modalities. Every example
is a pure function of (seed, modality, split, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import numpy as np

from omnifm.datasets.base import SPLITS, Split, check_split

__all__ = [
    "MIN_SIZE",
    "PHANTOM_CLASSES",
    "PHANTOM_MODALITIES",
    "PhantomModality",
    "blur",
    "check_phantom",
    "generate_phantoms",
    "render_scenes",
]

PhantomModality = Literal["ct", "mri", "xray", "ultrasound", "pathology"]
PHANTOM_MODALITIES: tuple[str, ...] = get_args(PhantomModality)
PHANTOM_CLASSES = ("organ", "lobes", "ring", "vessel")
MIN_SIZE = 16
_DISTRACTORS = 3
_H_STAIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)  # haematoxylin optical density, RGB
_E_STAIN = np.array([0.07, 0.99, 0.11], dtype=np.float32)  # eosin optical density, RGB


class _Anatomy(NamedTuple):
    """One batch of scenes before a modality style: all (B, S, S)."""

    density: np.ndarray  # tissue density in [0, 1]
    mask: np.ndarray  # the labelled structure
    body: np.ndarray  # the patient / tissue outline
    distractors: np.ndarray  # small blobs that are not the structure
    noise: np.ndarray  # (B, 4, S, S) standard normal fields for the style
    style: np.ndarray  # (B, 3) uniform style parameters
    grid: tuple[np.ndarray, np.ndarray]  # (Y, X) pixel centres in [-1, 1], (S, S)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes (reflect padding, FFT)."""
    pad = min(int(np.ceil(3 * sigma)), x.shape[-1] - 1)
    widths = [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)]
    padded = np.pad(x.astype(np.float32), widths, mode="reflect")
    h, w = padded.shape[-2:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(padded) * kernel, s=(h, w))
    return out[..., pad : h - pad, pad : w - pad].astype(np.float32)


def _ellipse(
    grid: tuple[np.ndarray, np.ndarray],
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    bend: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Boolean (B, S, S) ellipses with half-axes a (along theta) and b, optionally bent."""
    y, x = grid
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    v = v - np.asarray(bend).reshape(-1, 1, 1) * u**2
    return (u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2 <= 1.0


def _anatomy(
    labels: np.ndarray, params: np.ndarray, blobs: np.ndarray, noise: np.ndarray
) -> _Anatomy:
    """Draw the scenes of a batch from per-example uniform parameters.

    params (B, 16): 0-1 centre, 2 scale, 3 rotation, 4 aspect, 5 structure density, 6 body
    density, 7-8 body radii, 9 distractor count, 10-12 style, 13 hole size / vessel bend.
    blobs (B, 3, 4): distractor centre x, y, radius, density. noise (B, 4, S, S).
    """
    size = noise.shape[-1]
    lin = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    grid = np.meshgrid(lin, lin, indexing="ij")
    p = params.T
    cx, cy = (p[0] - 0.5) * 0.5, (p[1] - 0.5) * 0.5
    s, theta, aspect, shape = 0.32 + 0.14 * p[2], np.pi * p[3], p[4], p[13]
    ox, oy = 0.7 * s * np.cos(theta), 0.7 * s * np.sin(theta)
    lobe_b = s * (0.65 + 0.2 * aspect)
    outer_b = s * (0.75 + 0.25 * aspect)
    hole = 0.5 + 0.15 * shape
    shapes = [
        _ellipse(grid, cx, cy, s, s * (0.7 + 0.3 * aspect), theta),
        _ellipse(grid, cx + ox, cy + oy, 0.42 * s, lobe_b, theta)
        | _ellipse(grid, cx - ox, cy - oy, 0.42 * s, lobe_b, theta),
        _ellipse(grid, cx, cy, s, outer_b, theta)
        & ~_ellipse(grid, cx, cy, hole * s, hole * outer_b, theta),
        _ellipse(grid, cx, cy, np.minimum(1.7 * s, 0.75), 0.09 + 0.04 * aspect, theta, shape - 0.5),
    ]
    mask = np.select([labels[:, None, None] == k for k in range(len(shapes))], shapes, False)
    zeros = np.zeros_like(cx)
    body = _ellipse(grid, zeros, zeros, 0.82 + 0.13 * p[7], 0.72 + 0.18 * p[8], zeros)
    density = np.where(body, 0.22 + 0.13 * p[6][:, None, None], 0.0)
    distractors = np.zeros_like(mask)
    count = np.floor(3 * p[9]).astype(int)
    for k in range(_DISTRACTORS):
        bx, by, radius, level = blobs[:, k].T
        blob = _ellipse(grid, (bx - 0.5) * 1.4, (by - 0.5) * 1.4, radius, radius, zeros)
        blob = blob & (k < count)[:, None, None]
        density = np.where(blob, 0.4 + 0.55 * level[:, None, None], density)
        distractors |= blob
    density = np.where(mask, 0.55 + 0.35 * p[5][:, None, None], density)
    return _Anatomy(density, mask, body, distractors & ~mask, noise, p[10:13].T, grid)


def _ct(a: _Anatomy) -> np.ndarray:
    """Sharp edges, a random intensity window, mild Gaussian noise."""
    q = a.style.T[:, :, None, None]
    low, high = 0.1 * q[0], 0.75 + 0.2 * q[1]
    image = (blur(a.density, 0.4) - low) / (high - low)
    return (image + (0.03 + 0.04 * q[2]) * a.noise[:, 0])[..., None]


def _mri(a: _Anatomy) -> np.ndarray:
    """Smooth edges, inverted (T2-like) contrast, a smooth bias field, Rician noise."""
    q = a.style.T[:, :, None, None]
    y, x = a.grid
    signal = blur(a.body.astype(np.float32), 1.0) * (1.05 - blur(a.density, 1.0))
    smooth = blur(a.noise[:, 1], a.density.shape[-1] / 6)
    smooth = smooth / (smooth.std(axis=(1, 2), keepdims=True) + 1e-6)
    bias = 1 + 0.6 * ((q[0] - 0.5) * x + (q[1] - 0.5) * y) + 0.15 * smooth
    sigma = 0.03 + 0.03 * q[2]
    signal = signal * bias
    image = np.sqrt((signal + sigma * a.noise[:, 2]) ** 2 + (sigma * a.noise[:, 3]) ** 2)
    return image[..., None]


def _xray(a: _Anatomy) -> np.ndarray:
    """Projection blur, bright dense structures on a dark background, rib-like stripes."""
    q = a.style.T[:, :, None, None]
    y, _ = a.grid
    image = (1 - np.exp(-2.5 * blur(a.density, 1.4))) / (1 - np.exp(-2.5))
    ribs = 0.06 * np.sin(2 * np.pi * ((3 + 2 * q[0]) * y + q[1]))
    image = image + ribs * blur(a.body.astype(np.float32), 1.4)
    return (image + 0.02 * a.noise[:, 0])[..., None]


def _ultrasound(a: _Anatomy) -> np.ndarray:
    """Hypoechoic structure with an echogenic rim, Rayleigh speckle, a sector (fan) mask."""
    q = a.style.T[:, :, None, None]
    y, x = a.grid
    reflect = np.where(a.body, 0.55, 0.05).astype(np.float32)
    reflect = np.where(a.distractors, 0.95, reflect)
    reflect = np.where(a.mask, 0.18, reflect)
    gy, gx = np.gradient(blur(a.mask.astype(np.float32), 0.8), axis=(1, 2))
    reflect = reflect + 1.2 * np.clip(2 * np.hypot(gx, gy), 0, 1)
    speckle = np.hypot(blur(a.noise[:, 0], 0.6), blur(a.noise[:, 1], 0.6))
    speckle = speckle / (speckle.mean(axis=(1, 2), keepdims=True) + 1e-6)
    radius, angle = np.hypot(x, y + 1.15), np.arctan2(x, y + 1.15)
    fan = (np.abs(angle) < 0.6 + 0.15 * q[0]) & (radius < 2.1)
    gain = (0.5 + 0.2 * q[1]) * np.exp(-0.35 * (radius - 0.15))
    return (reflect * speckle * gain * fan)[..., None]


def _pathology(a: _Anatomy) -> np.ndarray:
    """H&E-like RGB: pink eosin stroma, purple haematoxylin nuclei, denser in the structure."""
    q = a.style.T[:, :, None, None]
    texture = blur(a.noise[:, 0], 1.2)
    texture = texture / (texture.std(axis=(1, 2), keepdims=True) + 1e-6)
    tissue = blur(a.body.astype(np.float32), 0.5)
    eosin = tissue * (0.45 + 0.12 * texture) + 0.25 * a.mask
    threshold = np.where(a.mask, 0.3, np.where(a.distractors, 0.8, 1.8))
    nuclei = (a.noise[:, 1] > threshold) & a.body
    cytoplasm = blur(a.mask.astype(np.float32), 0.7)
    haem = 1.4 * blur(nuclei.astype(np.float32), 0.5) + 0.1 * tissue + 0.6 * cytoplasm
    depth = 0.8 + 0.4 * q[0]
    optical = haem[..., None] * _H_STAIN + np.clip(eosin, 0, None)[..., None] * _E_STAIN
    return np.exp(-depth[..., None] * optical)


_STYLES = {
    "ct": _ct,
    "mri": _mri,
    "xray": _xray,
    "ultrasound": _ultrasound,
    "pathology": _pathology,
}


def check_phantom(modality: str, size: int, seed: int) -> None:
    """Raise a ValueError unless `modality`, `size` and `seed` can render phantoms."""
    if seed < 0:
        raise ValueError(f"phantom seed must be >= 0, got {seed}")
    if modality not in PHANTOM_MODALITIES:
        raise ValueError(f"unknown phantom modality {modality!r}; use one of {PHANTOM_MODALITIES}")
    if size < MIN_SIZE:
        raise ValueError(f"phantom size must be >= {MIN_SIZE} for the anatomy to show, got {size}")


def generate_phantoms(
    modality: str, size: int, seed: int, split: Split, indices: np.ndarray | list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render examples `indices` of one (seed, modality, split).

    Returns images (B, S, S, C) float32 in [0, 1], labels (B,) int64 and masks (B, S, S) uint8.
    Each example depends only on (seed, modality, split, index).
    """
    images, labels, masks = render_scenes([modality], size, seed, split, indices, modality)
    return images[modality], labels, masks


def render_scenes(
    modalities: Sequence[str],
    size: int,
    seed: int,
    split: Split,
    indices: np.ndarray | list[int],
    scene_of: str | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Render the same scenes in several modality styles (co-registered images).

    The scenes are those ``generate_phantoms(scene_of, ...)`` draws (default: the first
    modality's). Returns images per modality (B, S, S, C), labels (B,) and masks (B, S, S).
    """
    scene_of = scene_of or modalities[0]
    for modality in (*modalities, scene_of):
        check_phantom(modality, size, seed)
    if len(indices) == 0:
        raise ValueError("indices must name at least one example to generate")
    keys = (seed, PHANTOM_MODALITIES.index(scene_of), SPLITS.index(check_split(split)))
    labels, params, blobs, noise = [], [], [], []
    for index in indices:
        rng = np.random.default_rng([*keys, int(index)])
        labels.append(rng.integers(len(PHANTOM_CLASSES)))
        params.append(rng.random(16))
        blobs.append(rng.random((_DISTRACTORS, 4)) * [1, 1, 0.05, 1] + [0, 0, 0.04, 0])
        noise.append(rng.standard_normal((4, size, size), dtype=np.float32))
    label_array = np.asarray(labels, dtype=np.int64)
    scene = _anatomy(
        label_array,
        np.stack(params, dtype=np.float32),
        np.stack(blobs, dtype=np.float32),
        np.stack(noise),
    )
    images = {
        m: np.clip(_STYLES[m](scene), 0.0, 1.0).astype(np.float32)
        for m in dict.fromkeys(modalities)
    }
    return images, label_array, scene.mask.astype(np.uint8)
