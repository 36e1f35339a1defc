"""Any timm backbone as a token encoder: image -> (B, L, embed_dim)."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn

__all__ = ["TimmTokenEncoder"]


class TimmTokenEncoder(nn.Module):
    """A timm model's last feature map (CNN) or token sequence (ViT) projected to ``embed_dim``.

    Args:
        name: any ``timm.list_models()`` name, e.g. ``resnet18``.
        in_channels: image channels (timm adapts the stem, also for pretrained weights).
        embed_dim: token size handed to the OmniFM stack.
        pretrained: load timm's pretrained weights (needs the Hugging Face hub or its cache).
        weights: a local weights file (``.pth``/``.safetensors``) loaded through timm's
            ``pretrained_cfg_overlay``, for machines without network access.
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_channels: int = 3,
        embed_dim: int = 256,
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict = {}
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(
                    f"backbone weights file {weights!r} not found; give a local .pth or "
                    ".safetensors file, or set weights: null"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        if not timm.is_model(name.split(".")[0]):
            raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models()")
        self.backbone = timm.create_model(
            name,
            pretrained=pretrained or weights is not None,
            num_classes=0,
            global_pool="",
            in_chans=in_channels,
            **kwargs,
        )
        self.proj = nn.Linear(self.backbone.num_features, embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone.forward_features(images)
        if features.ndim == 4:  # CNN map (B, C, h, w) -> (B, h*w, C)
            features = features.flatten(2).transpose(1, 2)
        return self.proj(features)
