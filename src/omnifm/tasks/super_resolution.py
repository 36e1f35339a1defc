"""Single-image super-resolution (x2, x4, x8) with the OmniFM stack over the low-resolution
image's tokens."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch.nn.functional as F
from monai.networks.blocks import ResidualUnit, SubpixelUpsample
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from omnifm.blocks import DenseBridge, StackOutput
from omnifm.encoders.unet import TimmFeatureEncoder, UNetDecoder
from omnifm.functional import to_channels
from omnifm.tasks.base import Batch, Encoded, OmniFMTask

__all__ = ["SuperResolutionTask", "rgb_to_y"]

# ITU-R BT.601 studio-swing luma, as MATLAB's rgb2ycbcr (the usual SR benchmark convention)
_Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)
_Y_OFFSET = 16 / 255


def rgb_to_y(images: Tensor) -> Tensor:
    """The Y channel (BT.601, values in [16/255, 235/255]) of RGB images ``(B, 3, H, W)``."""
    weights = images.new_tensor(_Y_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True) + _Y_OFFSET


class SuperResolutionTask(OmniFMTask):
    """Upscale a low-resolution image ``scale`` times; items carry ``"image"`` (the LR input,
    ``(C, h, w)`` in [0, 1]) and ``"target"`` (the HR image, ``(C, h * scale, w * scale)``).

    Shallow convolutional features of the LR image (a 3x3 convolution and ``num_blocks``
    residual units) are cut into ``token_patch``-sized cells, one token each, for the OmniFM
    stack; its enriched tokens are added back onto the features and its suffix output (the
    client's personal PSP token) modulates them channel-wise (see ``DenseBridge``). Then
    ``log2(scale)`` pixel-shuffle x2 stages (MONAI ``SubpixelUpsample``) and a 3x3 ``head``
    predict the residual to the bicubic upsampling of the input (the head starts at zero, so
    a fresh model is bicubic upsampling). With ``stack: null`` it is the same network without
    the stack.

    Loss: L1 to the HR target. Metrics (torchmetrics, ``data_range=1.0``) on the prediction
    clamped to [0, 1]: ``psnr`` (per image, then averaged; identical images give ``inf``
    dB, not capped) and ``ssim`` (11x11 Gaussian window). ``metric_space`` says where they are
    measured: ``image``, every channel as given (RGB in [0, 1] for BreaKHis, grey for grey
    data), or ``y``, the BT.601 Y channel of RGB images, as most SR papers report.

    With ``backbone`` (a timm CNN name, e.g. ``resnet18``), the features come from that
    backbone's pyramid (``TimmFeatureEncoder``) decoded back to the LR grid by MONAI ``UpCat``
    blocks (``UNetDecoder``), plus one 3x3 convolution of the LR image at full resolution
    (the detail a backbone's stride-2 stem drops); the stack reads the backbone's deepest map,
    one token per position, as segmentation does. This is how a super-resolution hospital
    shares its encoder with classification and segmentation hospitals (``MultiTask``).

    A target whose channels differ from the image's (``FederatedDataModule`` converts only
    ``"image"`` to ``in_channels``) is converted the same way (grey repeated, RGB to luma).

    Args:
        in_channels: image channels; linked from the data.
        scale: upscaling factor, 2, 4 or 8.
        features: channels of the shallow features.
        num_blocks: residual units after the first convolution.
        token_patch: side of the LR cell that becomes one stack token.
        metric_space: ``image`` or ``y`` (RGB data only).
        backbone: a timm CNN for the features instead of the shallow convolutions (``None``);
            ``features`` and ``num_blocks`` are then unused.
        pretrained: timm's pretrained weights for ``backbone`` (needs the hub or its cache).
        **kwargs: ``OmniFMTask``'s arguments (``embed_dim``, ``stack``, ``spalign_weight``,
            ``optimizer``, ``recalibrate_bn``).
    """

    monitor, mode = "psnr", "max"

    def __init__(
        self,
        in_channels: int = 3,
        scale: Literal[2, 4, 8] = 2,
        features: int = 64,
        num_blocks: int = 4,
        token_patch: int = 4,
        metric_space: Literal["image", "y"] = "image",
        backbone: str | None = None,
        pretrained: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {scale}")
        if metric_space not in ("image", "y") or (metric_space == "y" and in_channels != 3):
            raise ValueError(
                f"metric_space must be 'image', or 'y' for 3-channel (RGB) data; got "
                f"{metric_space!r} with in_channels={in_channels}"
            )
        if features < 1 or num_blocks < 0:
            raise ValueError(
                f"need features >= 1 and num_blocks >= 0, got {features}, {num_blocks}"
            )
        self.scale = scale
        self.metric_space = metric_space
        self.encoder: nn.Module
        self.decoder: UNetDecoder | None = None
        self.shallow: nn.Conv2d | None = None
        if backbone is None:
            self.encoder = nn.Sequential(
                nn.Conv2d(in_channels, features, 3, padding=1),
                *(
                    ResidualUnit(2, features, features, act="RELU", norm=None)
                    for _ in range(num_blocks)
                ),
            )
            deepest, patch = features, token_patch
        else:
            self.encoder = TimmFeatureEncoder(backbone, in_channels, pretrained)
            channels = list(self.encoder.channels)
            self.decoder = UNetDecoder(2, channels)
            features, deepest, patch = channels[0], channels[-1], 1
            self.shallow = nn.Conv2d(in_channels, features, 3, padding=1)
        self.bridge = (
            DenseBridge(deepest, self.embed_dim, patch) if self.stack is not None else None
        )
        self.upsample = nn.Sequential(
            *(SubpixelUpsample(2, features, features, 2) for _ in range(int(math.log2(scale))))
        )
        self.head = nn.Conv2d(features, in_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # start as plain bicubic upsampling
        nn.init.zeros_(self.head.bias)
        self.set_metrics(
            MetricCollection(
                {
                    "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                    "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
                }
            )
        )

    # hooks --------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Encoded:
        """Tokens ``(B, L, D)`` of the LR image's features (the backbone's deepest map), and
        the features (the backbone's maps) for ``decode``."""
        features = self.encoder(batch["image"])
        deepest = features[-1] if self.decoder is not None else features
        if self.bridge is None:  # no stack: tokens are not used
            return Encoded(deepest.flatten(2).transpose(1, 2), features)
        return Encoded(self.bridge.tokens(deepest), features)

    def decode(self, out: StackOutput, batch: Batch, features: Any = None) -> Tensor:
        """The HR prediction ``(B, C, h * scale, w * scale)`` (not clamped)."""
        image = batch["image"]
        if self.decoder is not None and self.shallow is not None:
            maps = list(features)
            if self.bridge is not None:
                maps[-1] = self.bridge.fuse(maps[-1], out.tokens, out.suffix)
            features = self.decoder(maps, image.shape[2:]) + self.shallow(image)
        elif self.bridge is not None:
            features = self.bridge.fuse(features, out.tokens, out.suffix)
        bicubic = F.interpolate(image, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return bicubic + self.head(self.upsample(features))

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        return F.l1_loss(preds, self._target(batch, preds))

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        preds, target = preds.clamp(0, 1), self._target(batch, preds).clamp(0, 1)
        if self.metric_space == "y":
            preds, target = rgb_to_y(preds), rgb_to_y(target)
        metrics.update(preds, target)

    def _target(self, batch: Batch, preds: Tensor) -> Tensor:
        target = batch["target"]
        if target.shape[1] != preds.shape[1]:
            target = to_channels(target.transpose(0, 1), preds.shape[1]).transpose(0, 1)
        if target.shape != preds.shape:
            raise ValueError(
                f"HR target {tuple(target.shape)} does not match the LR image x{self.scale} "
                f"{tuple(preds.shape)}; make the data's scale equal the model's"
            )
        return target.to(preds.dtype)
