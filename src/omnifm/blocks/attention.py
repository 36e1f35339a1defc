"""Embedding-wise Cross-Attention (ECA): tokens attend to retrieved spectral prototypes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EmbeddingCrossAttention"]


class EmbeddingCrossAttention(nn.Module):
    """``Z = softmax(Q K^T / sqrt(d_h)) V`` with Q from tokens and K, V from prototypes.

    Queries come from the (layer-normalised) tokens ``r`` ``(B, L, dim)``; keys and values are
    the prototypes ``(B, k, context_dim)`` projected to ``dim``. A learned null key/value pair
    (``add_bias_kv`` of ``nn.MultiheadAttention``) is always present, so an empty bank (``k=0``)
    yields a learned context instead of an error.
    """

    def __init__(
        self, dim: int, context_dim: int, num_heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(
            dim,
            num_heads,
            dropout=dropout,
            kdim=context_dim,
            vdim=context_dim,
            add_bias_kv=True,
            batch_first=True,
        )

    def forward(self, tokens: Tensor, context: Tensor) -> Tensor:
        context = context.to(tokens.dtype)
        z, _ = self.attn(self.norm(tokens), context, context, need_weights=False)
        return z

    @torch.no_grad()
    def attention_weights(self, tokens: Tensor, context: Tensor) -> Tensor:
        """Head-averaged weights ``(B, L, 1 + k)``; column 0 is the learned null slot."""
        _, weights = self.attn(self.norm(tokens), context, context, need_weights=True)
        return torch.cat([weights[..., -1:], weights[..., :-1]], dim=-1)
