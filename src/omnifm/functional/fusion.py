"""Image-fusion math: YCbCr colour, gradients, the unsupervised fusion loss, entropy and mutual
information of images."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.clustering import mutual_info_score
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = [
    "fusion_loss",
    "gradient_magnitude",
    "image_entropy",
    "image_mutual_information",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

# ITU-R BT.601 full range (JPEG/JFIF), the convention of PIL's "YCbCr" mode and of
# kornia.color.rgb_to_ycbcr. Written here rather than taken from kornia (not a dependency):
# three lines, and the exact inverse makes the round trip lossless to float precision, where
# kornia's rounded inverse constants leave ~1e-3.
_RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
        [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402],
    ],
    dtype=torch.float64,
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _apply(matrix: Tensor, image: Tensor) -> Tensor:
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected images (..., 3, H, W), got shape {tuple(image.shape)}")
    m = matrix.to(image.device, image.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, image)


def rgb_to_ycbcr(image: Tensor) -> Tensor:
    """RGB ``(..., 3, H, W)`` in [0, 1] -> YCbCr in [0, 1] (chroma centred at 0.5)."""
    return _apply(_RGB_TO_YCBCR, image) + _OFFSET.to(image.device, image.dtype)[:, None, None]


def ycbcr_to_rgb(image: Tensor) -> Tensor:
    """YCbCr ``(..., 3, H, W)`` -> RGB; the exact inverse of ``rgb_to_ycbcr`` (not clamped)."""
    return _apply(_YCBCR_TO_RGB, image - _OFFSET.to(image.device, image.dtype)[:, None, None])


def gradient_magnitude(image: Tensor) -> Tensor:
    """``|d/dx| + |d/dy|`` of ``(B, C, H, W)`` by Sobel filters (replicate padding), per channel.

    A fixed 3x3 convolution: torchmetrics and MONAI have no differentiable batched Sobel
    (MONAI's ``SobelGradients`` is a per-image transform) and kornia is not a dependency.
    """
    channels = image.shape[1]
    kx = _SOBEL.to(image.device, image.dtype)
    kernel = torch.stack([kx, kx.T])[:, None].repeat(channels, 1, 1, 1)  # (2C, 1, 3, 3)
    grads = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
    return grads.abs().view(image.shape[0], channels, 2, *image.shape[2:]).sum(dim=2)


def fusion_loss(
    fused: Tensor,
    first: Tensor,
    second: Tensor,
    ssim_weight: float = 1.0,
    intensity_weight: float = 1.0,
    gradient_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Unsupervised fusion loss of images ``(B, 1, H, W)`` in [0, 1] and its three terms.

    - structure: ``1 - (SSIM(F, A) + SSIM(F, B)) / 2``;
    - intensity: ``|F - max(A, B)|`` (keeps the brighter, salient source);
    - gradient: ``| |grad F| - max(|grad A|, |grad B|) |`` (keeps the sharper texture),

    each averaged over pixels, as in SwinFusion / U2Fusion style training.
    """
    ssim_a = structural_similarity_index_measure(fused, first, data_range=1.0)
    ssim_b = structural_similarity_index_measure(fused, second, data_range=1.0)
    terms = {
        "ssim": 1.0 - 0.5 * (ssim_a + ssim_b),
        "intensity": F.l1_loss(fused, torch.maximum(first, second)),
        "gradient": F.l1_loss(
            gradient_magnitude(fused),
            torch.maximum(gradient_magnitude(first), gradient_magnitude(second)),
        ),
    }
    total = (
        ssim_weight * terms["ssim"]
        + intensity_weight * terms["intensity"]
        + gradient_weight * terms["gradient"]
    )
    return total, terms


def _levels(image: Tensor, bins: int) -> Tensor:
    """Per-image integer grey levels ``(B, H*W)`` of images ``(B, 1, H, W)`` in [0, 1]."""
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"expected grey images (B, 1, H, W), got shape {tuple(image.shape)}")
    return (image.clamp(0, 1) * (bins - 1)).round().long().flatten(1)


def image_entropy(image: Tensor, bins: int = 256) -> Tensor:
    """Shannon entropy (bits) of the grey-level histogram of each image ``(B, 1, H, W)``."""
    levels = _levels(image, bins)
    offsets = torch.arange(levels.shape[0], device=levels.device)[:, None] * bins
    counts = torch.bincount((levels + offsets).flatten(), minlength=levels.shape[0] * bins)
    p = counts.view(levels.shape[0], bins).float() / levels.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(dim=1)


def image_mutual_information(first: Tensor, second: Tensor, bins: int = 256) -> Tensor:
    """Mutual information (bits) between the grey levels of paired images ``(B, 1, H, W)``."""
    a, b = _levels(first, bins), _levels(second, bins)
    with warnings.catch_warnings():  # torchmetrics' sparse contingency table warns on use
        warnings.filterwarnings("ignore", ".*Sparse invariant checks.*")
        values = [mutual_info_score(x, y) for x, y in zip(a, b, strict=True)]  # nats
    return torch.stack(values).to(first.dtype) / math.log(2)
