"""Feature pyramids for dense tasks: a MONAI U-Net encoder (2D/3D) or a timm ``features_only``
backbone (2D), and the U-Net decoder that climbs back up their skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import Tensor, nn

__all__ = ["TimmFeatureEncoder", "UNetDecoder", "UNetEncoder"]

ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})  # as MONAI's BasicUNet
NORMS = {"instance": ("instance", {"affine": True}), "batch": ("batch", {})}


def _norm(norm: str) -> tuple:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {sorted(NORMS)}")
    return NORMS[norm]


class UNetEncoder(nn.Module):
    """MONAI ``BasicUNet``'s contracting path: ``TwoConv`` then a ``Down`` per level.

    ``forward(x)`` returns one map per level, shallow to deep: ``features[i]`` channels at
    ``1 / 2**i`` of the input size (the last one is the bottleneck).

    Args:
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        in_channels: image channels.
        features: channels per level; ``len(features) - 1`` halvings.
        norm: ``instance`` (BasicUNet's default; nothing client-specific to average) or
            ``batch``.
        dropout: dropout in the convolution blocks.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or len(features) < 2:
            raise ValueError(
                f"need spatial_dims 2 or 3 and at least 2 feature levels, got {spatial_dims} and "
                f"{list(features)}"
            )
        n = _norm(norm)
        self.channels = list(features)
        self.reductions = [2**i for i in range(len(features))]
        self.stem = TwoConv(spatial_dims, in_channels, features[0], ACT, n, True, dropout)
        self.downs = nn.ModuleList(
            Down(spatial_dims, features[i], features[i + 1], ACT, n, True, dropout)
            for i in range(len(features) - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = [self.stem(x)]
        for down in self.downs:
            maps.append(down(maps[-1]))
        return maps


class TimmFeatureEncoder(nn.Module):
    """Any timm CNN with ``features_only=True`` (2D): maps at strides 2, 4, ..., 32 for a ResNet.

    Args:
        name: timm model name, e.g. ``resnet34``.
        in_channels: image channels (timm adapts the stem, also for pretrained weights).
        pretrained: timm's pretrained weights (needs the Hugging Face hub or its cache).
    """

    def __init__(self, name: str = "resnet18", in_channels: int = 3, pretrained: bool = False):
        super().__init__()
        if not timm.is_model(name.split(".")[0]):
            raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models()")
        self.backbone = timm.create_model(
            name, pretrained=pretrained, features_only=True, in_chans=in_channels
        )
        self.channels = list(self.backbone.feature_info.channels())
        self.reductions = list(self.backbone.feature_info.reduction())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.backbone(x))


class UNetDecoder(nn.Module):
    """MONAI ``UpCat`` blocks from the bottleneck up the skip connections to full resolution.

    ``forward(maps, size)`` takes an encoder's maps (shallow to deep, the deepest possibly
    replaced by an enriched bottleneck) and returns ``channels[0]`` channels at ``size``;
    a pyramid that starts below full resolution (timm: stride 2) is interpolated up.

    Sides that are not a multiple of the pyramid's stride: ``UpCat`` pads an upsampled map one
    short of its skip (max pooling floors odd sides); a timm pyramid's strided convolutions
    round up instead, so an upsampled map one longer than its skip is resized to it here (a
    24-pixel image into a ResNet failed at the concatenation before).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = _norm(norm)
        c = list(channels)
        self.spatial_dims = spatial_dims
        self.ups = nn.ModuleList(
            UpCat(spatial_dims, c[i + 1], c[i], c[i], ACT, n, True, dropout, halves=True)
            for i in reversed(range(len(c) - 1))
        )

    def forward(self, maps: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        x = maps[-1]
        for up, skip in zip(self.ups, reversed(maps[:-1]), strict=True):
            if any(2 * a > b for a, b in zip(x.shape[2:], skip.shape[2:], strict=True)):
                grown = F.interpolate(up.upsample(x), size=skip.shape[2:], mode=mode)
                x = up.convs(torch.cat([skip, grown], dim=1))  # as UpCat, with the skip first
            else:
                x = up(x, skip)
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
        return x
