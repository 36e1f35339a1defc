"""Prefix-Suffix Spectral Prompting (PSP): ``r' = [prefix(Z) || r || c]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PrefixSuffixPrompt"]


class PrefixSuffixPrompt(nn.Module):
    """Prepend the fused spectral context and append a client-specific learnable token.

    The prefix is ``Z`` pooled to ``num_prefix`` tokens (``None`` keeps all ``L``) and
    projected; the suffix ``c`` is personal: federated strategies never aggregate it.
    """

    personal: tuple[str, ...] = ("suffix",)

    def __init__(self, dim: int, num_prefix: int | None = 4) -> None:
        super().__init__()
        if num_prefix is not None and num_prefix < 1:
            raise ValueError(f"num_prefix must be at least 1 or None, got {num_prefix}")
        self.num_prefix = num_prefix
        self.prefix_proj = nn.Linear(dim, dim)
        self.suffix = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.suffix, std=0.02)

    def forward(self, z: Tensor | None, r: Tensor) -> Tensor:
        """``[prefix(Z) || r || c]``; without ``Z`` (ECA off) only ``[r || c]``."""
        parts = [r, self.suffix.expand(r.shape[0], -1, -1).to(r.dtype)]
        if z is not None:
            if self.num_prefix is not None:
                z = F.adaptive_avg_pool1d(z.transpose(1, 2), self.num_prefix).transpose(1, 2)
            parts.insert(0, self.prefix_proj(z))
        return torch.cat(parts, dim=1)

    def split(self, tokens: Tensor, num_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
        """Split ``forward``'s layout back into ``(prefix, r, suffix)``."""
        prefix_len = tokens.shape[1] - num_tokens - 1
        prefix, r, c = tokens.split([prefix_len, num_tokens, 1], dim=1)
        return prefix, r, c.squeeze(1)

    def personal_parameter_names(self) -> list[str]:
        return list(self.personal)
