"""Feature map <-> OmniFM tokens, for dense tasks (segmentation, super-resolution)."""

from __future__ import annotations

import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import Tensor, nn

__all__ = ["DenseBridge"]


class DenseBridge(nn.Module):
    """Turn a feature map into stack tokens and fold the stack's output back into the map.

    ``tokens(x)``: ``x`` ``(B, C, *grid)`` -> ``(B, L, dim)``, one token per ``patch``-sized
    cell (a strided convolution; ``patch=1`` is a 1x1 projection, one token per position).

    ``fuse(x, tokens, suffix)``: the enriched image tokens are reshaped to the token grid,
    projected back to ``C`` channels, resized to ``x``'s grid and *added* to ``x`` (residual:
    the spectral prefix reaches every position through the stack's self-attention); the
    suffix output (the client's personal PSP token after the stack) then *modulates* the
    result channel-wise, FiLM style: ``x * (1 + gamma(suffix)) + beta(suffix)``.

    The projection back (``unembed``), ``gamma`` and ``beta`` start at zero (as ControlNet's
    zero convolutions), so a fresh bridge returns ``x`` unchanged: a fresh model with the
    stack computes what the plain network computes, and the stack's share grows from there
    by gradient descent. With a random projection back instead, the stack's untrained
    output was added to the features at the start; OmniFM on BreaKHis super-resolution then
    ended 0.16 dB (x2) and 0.13 dB (x4) lower (``benchmarks/``, 12 rounds).

    Args:
        channels: ``C``, channels of the feature map.
        dim: token size of the OmniFM stack.
        patch: side of the cell that becomes one token.
        spatial_dims: 2 for images, 3 for volumes.
    """

    def __init__(self, channels: int, dim: int, patch: int = 1, spatial_dims: int = 2) -> None:
        super().__init__()
        if patch < 1 or spatial_dims not in (2, 3):
            raise ValueError(f"need patch >= 1 and spatial_dims 2 or 3, got {patch} {spatial_dims}")
        conv = Conv[Conv.CONV, spatial_dims]
        self.patch = patch
        self.embed = conv(channels, dim, kernel_size=patch, stride=patch)
        self.unembed = conv(dim, channels, kernel_size=1)
        self.film = nn.Linear(dim, 2 * channels)
        for layer in (self.unembed, self.film):  # a fresh bridge leaves the features as they are
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def tokens(self, x: Tensor) -> Tensor:
        """``(B, C, *grid)`` -> ``(B, L, dim)``."""
        if any(s < self.patch for s in x.shape[2:]):
            raise ValueError(
                f"feature map {tuple(x.shape[2:])} is smaller than the token patch {self.patch}"
            )
        return self.embed(x).flatten(2).transpose(1, 2)

    def fuse(self, x: Tensor, tokens: Tensor, suffix: Tensor) -> Tensor:
        """``x`` plus the enriched ``tokens`` (B, L, dim), modulated by ``suffix`` (B, dim)."""
        cells = [size // self.patch for size in x.shape[2:]]  # the grid ``tokens`` made
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *cells)
        residual = self.unembed(grid)
        if residual.shape[2:] != x.shape[2:]:
            mode = "bilinear" if x.ndim == 4 else "trilinear"
            residual = F.interpolate(residual, size=x.shape[2:], mode=mode, align_corners=False)
        gamma, beta = self.film(suffix).chunk(2, dim=-1)
        shape = (*gamma.shape, *([1] * (x.ndim - 2)))
        return (x + residual) * (1 + gamma.view(shape)) + beta.view(shape)
