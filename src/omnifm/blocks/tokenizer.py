"""Spectral tokenizer: image -> low-pass amplitude spectrum -> FreqMix -> unit-norm token ``s``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.mlp_mixer import MixerBlock
from torch import Tensor, nn

from omnifm.functional import amplitude_spectrum, low_pass

__all__ = ["SpectralStandardize", "SpectralTokenizer"]


class SpectralStandardize(nn.Module):
    """Standardise each frequency bin of the low-pass window with running statistics.

    Most of every log-amplitude window is the 1/f envelope that all images share (cosines of
    raw windows 0.90-0.96 whatever the source); subtracting each bin's mean and dividing by
    its spread leaves what tells images apart (nearest-neighbour same-source rate 0.92 -> 0.95
    on three MedMNIST files). Unlike batch norm, training batches are normalised with the
    *running* statistics too: a client's batches hold one modality, and their own statistics
    would remove exactly the differences between modalities. The statistics are buffers, so
    the federation averages them like any shared state; they are not a ``_BatchNorm``, so
    FedBN and batch-norm recalibration leave them alone. Updates use the cumulative mean for
    the first ``1 / momentum`` batches, then an exponential average with ``momentum``.
    """

    def __init__(self, shape: tuple[int, ...], momentum: float = 0.02, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("num_updates", torch.zeros(()))

    def forward(self, window: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                x = window.detach().float()
                rate = max(self.momentum, 1.0 / (float(self.num_updates) + 1.0))
                self.mean.lerp_(x.mean(dim=0), rate)
                self.var.lerp_(x.var(dim=0, unbiased=False) if len(x) > 1 else self.var, rate)
                self.num_updates += 1
        return (window - self.mean) / (self.var + self.eps).sqrt()


class SpectralTokenizer(nn.Module):
    """Turn images of any channel count and size into an L2-normalised spectral token.

    The centred low-pass window of the amplitude spectrum (``low_pass_size`` bins per spatial
    dim) is read as ``low_pass_size ** (spatial_dims - 1)`` tokens (one per line of frequency
    bins) of ``low_pass_size`` features. FreqMix is a stack of MLP-Mixer blocks (timm's
    ``MixerBlock``: LayerNorm, residual mixing across frequency bins, then across features);
    a projection to ``dim`` and mean pooling give the token.

    Args:
        dim: size of the spectral token ``s``.
        low_pass_size: bins kept around DC per spatial dim; images need at least this size.
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        hidden_dim: width of the FreqMix blocks.
        depth: number of FreqMix blocks.
        dropout: dropout inside the FreqMix MLPs.
        standardize: standardise each frequency bin with running statistics shared by the
            federation (``SpectralStandardize``) before FreqMix.
    """

    def __init__(
        self,
        dim: int,
        low_pass_size: int = 16,
        spatial_dims: int = 2,
        hidden_dim: int = 64,
        depth: int = 2,
        dropout: float = 0.0,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.low_pass_size = low_pass_size
        self.spatial_dims = spatial_dims
        self.num_tokens = low_pass_size ** (spatial_dims - 1)
        window = (low_pass_size,) * spatial_dims
        self.standardize = SpectralStandardize(window) if standardize else nn.Identity()
        self.embed = nn.Linear(low_pass_size, hidden_dim)
        self.freq_mix = nn.Sequential(
            *(MixerBlock(hidden_dim, self.num_tokens, drop=dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.proj = nn.Linear(hidden_dim, dim)

    def spectrum(self, images: Tensor) -> Tensor:
        """The low-pass amplitude window ``(B, *[low_pass_size] * spatial_dims)``."""
        amplitude = amplitude_spectrum(images, self.spatial_dims)
        return low_pass(amplitude, self.low_pass_size, self.spatial_dims)

    def forward(self, images: Tensor) -> Tensor:
        window = self.standardize(self.spectrum(images))
        tokens = window.reshape(window.shape[0], self.num_tokens, self.low_pass_size)
        tokens = self.norm(self.freq_mix(self.embed(tokens)))
        return F.normalize(self.proj(tokens).mean(dim=1), dim=-1)
