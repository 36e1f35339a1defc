"""Multimodal image fusion: two co-registered images in, one fused image out, unsupervised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from omnifm.blocks import DenseBridge, StackOutput
from omnifm.encoders.unet import TimmFeatureEncoder, UNetDecoder, UNetEncoder
from omnifm.functional.fusion import fusion_loss, rgb_to_ycbcr, ycbcr_to_rgb
from omnifm.metrics import FusedEntropy, FusedMutualInformation, FusedSSIM, FusedVIF
from omnifm.tasks.base import Batch, Encoded, OmniFMTask

__all__ = ["FusionTask"]


class FusionTask(OmniFMTask):
    """Fuse a structural image (MRI) with its co-registered partner (CT, PET or SPECT).

    Batches carry ``"image"`` ``(B, 1, H, W)``, the MRI, and ``"partner"`` ``(B, 3, H, W)``,
    RGB (grey CT repeated). Fusion happens in YCbCr, as is standard for pseudo-colour
    PET/SPECT: the partner's luminance Y is fused with the MRI and the partner's chroma
    (Cb, Cr) is kept, so ``fuse(batch)`` returns RGB; a grey partner gives a grey result.

    Network: one shared encoder (MONAI U-Net encoder, or a timm ``features_only`` backbone)
    runs on each input; both bottlenecks become tokens (``DenseBridge``), concatenated
    ``[MRI tokens || partner tokens]`` through the OmniFM stack, whose attention mixes the two
    inputs and the retrieved spectral knowledge (the spectral token is computed from both
    inputs as two channels); each enriched half is folded back into its bottleneck. At every
    level the two inputs' maps are merged by a 1x1 convolution, the U-Net decoder climbs the
    merged skip connections, and the 1x1 ``head`` (personal under FedPer and OmniFM) with a
    sigmoid gives the fused luminance in [0, 1]. With ``stack: null`` the bottlenecks are
    merged directly.

    Loss (unsupervised, ``omnifm.functional.fusion.fusion_loss``): structure
    ``1 - mean SSIM(F, source)``, intensity ``|F - max(sources)|`` and gradient
    ``| |grad F| - max |grad sources| |``, weighted. Metrics on the luminance: ``vif`` (mean
    of VIF with each source as the reference), ``ssim_mri`` and ``ssim_partner``, ``mi``
    (MI(F, MRI) + MI(F, partner), bits) and ``entropy`` (bits).

    Args:
        backbone: ``None`` for the MONAI U-Net encoder, or a timm model name.
        pretrained: timm pretrained weights for ``backbone``.
        features: channels per level of the MONAI encoder.
        norm: ``instance`` or ``batch`` normalisation in the MONAI encoder and the decoder.
        ssim_weight: weight of the structure term.
        intensity_weight: weight of the intensity term.
        gradient_weight: weight of the gradient term.
        **kwargs: ``OmniFMTask``'s arguments (``embed_dim``, ``stack``, ``spalign_weight``,
            ``optimizer``, ``recalibrate_bn``).
    """

    monitor, mode = "vif", "max"

    def __init__(
        self,
        backbone: str | None = None,
        pretrained: bool = False,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: Literal["instance", "batch"] = "instance",
        ssim_weight: float = 1.0,
        intensity_weight: float = 1.0,
        gradient_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if min(ssim_weight, intensity_weight, gradient_weight) < 0:
            raise ValueError(
                "loss weights must be >= 0, got "
                f"{ssim_weight}, {intensity_weight} and {gradient_weight}"
            )
        self.weights = (ssim_weight, intensity_weight, gradient_weight)
        if backbone is None:
            self.encoder: nn.Module = UNetEncoder(2, 1, features, norm)
        else:
            self.encoder = TimmFeatureEncoder(backbone, 1, pretrained)
        channels = list(self.encoder.channels)
        self.bridge = DenseBridge(channels[-1], self.embed_dim) if self.stack is not None else None
        self.merge = nn.ModuleList(nn.Conv2d(2 * c, c, kernel_size=1) for c in channels)
        self.decoder = UNetDecoder(2, channels, norm)
        self.head = nn.Conv2d(channels[0], 1, kernel_size=1)
        self.set_metrics(
            MetricCollection(
                {
                    "vif": FusedVIF(),
                    "ssim_mri": FusedSSIM("first"),
                    "ssim_partner": FusedSSIM("second"),
                    "mi": FusedMutualInformation(),
                    "entropy": FusedEntropy(),
                },
                compute_groups=False,
            )
        )

    # inputs -------------------------------------------------------------------------------
    def sources(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The two grey inputs ``(B, 1, H, W)``: the MRI and the partner's luminance Y."""
        image, partner = batch["image"], batch["partner"]
        if image.ndim != 4 or image.shape[1] != 1 or partner.ndim != 4 or partner.shape[1] != 3:
            raise ValueError(
                "fusion batches need 'image' (B, 1, H, W) and 'partner' (B, 3, H, W), got "
                f"{tuple(image.shape)} and {tuple(partner.shape)}"
            )
        if image.shape[2:] != partner.shape[2:]:
            raise ValueError(
                f"'image' {tuple(image.shape[2:])} and 'partner' {tuple(partner.shape[2:])} "
                "differ in size; fusion needs co-registered pairs"
            )
        return image, rgb_to_ycbcr(partner)[:, :1]

    def spectral_input(self, batch: Batch) -> Tensor:
        return torch.cat(self.sources(batch), dim=1)

    # hooks --------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Encoded:
        """Both inputs' bottleneck tokens joined; their encoder maps, in pairs, for the decoder."""
        first, second = self.sources(batch)
        pairs = [m.chunk(2) for m in self.encoder(torch.cat([first, second]))]
        a, b = pairs[-1]
        if self.bridge is None:
            return Encoded(torch.cat([a, b], dim=-1).flatten(2).transpose(1, 2), pairs)
        return Encoded(torch.cat([self.bridge.tokens(a), self.bridge.tokens(b)], dim=1), pairs)

    def decode(self, out: StackOutput, batch: Batch, features: Any = None) -> Tensor:
        """The fused luminance ``(B, 1, H, W)`` in [0, 1] from the map pairs ``features``."""
        pairs = list(features)
        if self.bridge is not None:
            a, b = pairs[-1]
            ta, tb = out.tokens.chunk(2, dim=1)
            pairs[-1] = (self.bridge.fuse(a, ta, out.suffix), self.bridge.fuse(b, tb, out.suffix))
        maps = [merge(torch.cat(p, dim=1)) for merge, p in zip(self.merge, pairs, strict=True)]
        return torch.sigmoid(self.head(self.decoder(maps, batch["image"].shape[2:])))

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        return fusion_loss(preds, *self.sources(batch), *self.weights)[0]

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        metrics.update(preds, *self.sources(batch))

    # colour -------------------------------------------------------------------------------
    def colorize(self, fused: Tensor, batch: Batch) -> Tensor:
        """RGB ``(B, 3, H, W)`` in [0, 1]: fused luminance with the partner's chroma."""
        chroma = rgb_to_ycbcr(batch["partner"])[:, 1:]
        return ycbcr_to_rgb(torch.cat([fused, chroma], dim=1)).clamp(0.0, 1.0)

    @torch.no_grad()
    def fuse(self, batch: Batch) -> Tensor:
        """The fused RGB image of a batch."""
        return self.colorize(self(batch)[0], batch)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.colorize(self(batch)[0], batch)
