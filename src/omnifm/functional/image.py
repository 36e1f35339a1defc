"""Channel conversion of images: grey repeated to N channels, RGB to ITU-R 601 luma."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LUMA_601", "can_convert", "to_channels"]

LUMA_601 = (0.299, 0.587, 0.114)


def to_channels(image: Tensor, channels: int) -> Tensor:
    """A (C, *spatial) image with `channels` channels: grey repeated, or RGB to ITU-R 601 luma."""
    have = image.shape[0]
    if not can_convert(have, channels):
        raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")
    if have == channels:
        return image
    ones = [1] * (image.ndim - 1)  # 2D images and 3D volumes alike
    if have == 1:
        return image.repeat(channels, *ones)
    weights = torch.tensor(LUMA_601, dtype=image.dtype, device=image.device)
    return (image * weights.view(-1, *ones)).sum(0, keepdim=True)


def can_convert(have: int, channels: int) -> bool:
    """Whether `to_channels` converts `have` channels to `channels`: same, 1 -> N, 3 -> 1."""
    return have == channels or have == 1 or (have == 3 and channels == 1)
