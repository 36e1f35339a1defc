"""Amplitude spectra of images and their low-frequency window."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["amplitude_spectrum", "low_pass"]


def amplitude_spectrum(x: Tensor, spatial_dims: int = 2, eps: float = 1e-8) -> Tensor:
    """Centred, channel-averaged, log-scaled amplitude spectrum of a batch of images.

    ``x`` is ``(B, C, *spatial)`` with ``spatial_dims`` trailing spatial dims; the result is
    ``(B, *spatial)``. The amplitude is divided by its mean over frequencies before ``log1p``,
    so multiplying the image by a constant leaves the spectrum unchanged, and a circular shift
    of the image only changes the phase, not the amplitude.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected images of shape (B, C, {'D, ' if spatial_dims == 3 else ''}H, W) "
            f"for spatial_dims={spatial_dims}, got shape {tuple(x.shape)}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # FFTs of half precision need power-of-two sizes; integers need casting
    dims = tuple(range(-spatial_dims, 0))
    amplitude = torch.fft.fftn(x, dim=dims).abs().mean(dim=1)
    amplitude = torch.fft.fftshift(amplitude, dim=dims)
    scale = amplitude.mean(dim=dims, keepdim=True).clamp_min(eps)
    return torch.log1p(amplitude / scale)


def low_pass(
    amplitude: Tensor, size: int | Sequence[int], spatial_dims: int | None = None
) -> Tensor:
    """Crop the centred ``size`` window (per spatial dim) of a centred spectrum.

    The window holds the lowest ``size`` frequencies around DC whatever the input resolution,
    so spectra of images of different sizes become comparable. ``spatial_dims`` defaults to
    ``len(size)`` for a sequence and to 2 for an int.
    """
    if isinstance(size, int):
        sizes = (size,) * (spatial_dims or 2)
    else:
        sizes = tuple(size)
        if spatial_dims is not None and len(sizes) != spatial_dims:
            raise ValueError(f"size {sizes} does not have spatial_dims={spatial_dims} entries")
    spatial = amplitude.shape[-len(sizes) :]
    if any(s < 1 for s in sizes) or any(s > n for s, n in zip(sizes, spatial, strict=True)):
        raise ValueError(
            f"low-pass window {sizes} must be at least 1 and at most the spectrum size "
            f"{tuple(spatial)}; use a smaller low_pass_size or larger images"
        )
    out = amplitude
    for axis, (s, n) in enumerate(
        zip(sizes, spatial, strict=True), start=amplitude.ndim - len(sizes)
    ):
        start = n // 2 - s // 2
        out = out.narrow(axis, start, s)
    return out
