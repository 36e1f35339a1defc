"""A MONAI 3D ResNet as a token encoder for volumes: (B, C, D, H, W) -> (B, L, embed_dim)."""

from __future__ import annotations

from pathlib import Path

import monai.networks.nets as monai_nets
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args
from torch import Tensor, nn

__all__ = ["VOLUME_BACKBONES", "VolumeTokenEncoder"]

VOLUME_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")


class VolumeTokenEncoder(nn.Module):
    """The last feature map of MONAI's 3D ResNet (Chen et al.'s MedicalNet layout), one token
    per voxel of that map, projected to ``embed_dim``. A 28^3 volume gives 2x2x2 = 8 tokens,
    a 64^3 volume 4x4x4 = 64.

    Args:
        name: a MONAI ResNet factory: ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``
            or ``resnet101``.
        in_channels: volume channels.
        embed_dim: token size handed to the OmniFM stack.
        width: MONAI's ``widen_factor``, the channels of every layer times this (0.25 makes a
            ResNet-10 small enough for a CPU).
        pretrained: MONAI's MedicalNet weights (downloaded from the Hugging Face hub; needs
            network access and ``in_channels`` 1).
        weights: a local MedicalNet weights file instead of the download. Either one builds
            the network the way MedicalNet was trained (its shortcut type and biases).
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_channels: int = 1,
        embed_dim: int = 256,
        width: float = 1.0,
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if name not in VOLUME_BACKBONES:
            raise ValueError(f"unknown 3D backbone {name!r}; use one of {list(VOLUME_BACKBONES)}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(
                f"3D backbone weights file {weights!r} not found; give a local MedicalNet file, "
                "or set weights: null"
            )
        medicalnet: dict = {}
        if pretrained or weights is not None:
            bias, shortcut = get_medicalnet_pretrained_resnet_args(int(name[len("resnet") :]))
            medicalnet = {"bias_downsample": bias, "shortcut_type": shortcut}
        net = getattr(monai_nets, name)(
            pretrained=weights or pretrained,
            spatial_dims=3,
            n_input_channels=in_channels,
            widen_factor=width,
            feed_forward=False,
            **medicalnet,
        )
        # the layers up to the last map; MONAI's forward would pool them to one vector
        self.backbone = nn.Sequential(
            net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.proj = nn.Linear(net.in_planes, embed_dim)

    def forward(self, volumes: Tensor) -> Tensor:
        features = self.backbone(volumes)  # (B, C, d, h, w)
        return self.proj(features.flatten(2).transpose(1, 2))
