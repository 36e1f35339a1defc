"""The OmniFM block stack: spectral tokenizer, retrieval, ECA, PSP and transformer layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from omnifm.bank import Retriever
from omnifm.blocks.attention import EmbeddingCrossAttention
from omnifm.blocks.prompt import PrefixSuffixPrompt
from omnifm.blocks.tokenizer import SpectralTokenizer
from omnifm.functional import spalign_loss

__all__ = ["OmniFMStack", "StackOutput"]


@dataclass
class StackOutput:
    """What the stack returns for a batch."""

    tokens: Tensor  # (B, L, dim) enriched tokens at the positions of the input tokens
    suffix: Tensor  # (B, dim) output at the suffix token (mean of tokens when PSP is off)
    align: Tensor  # scalar SPAlign term; zero when SPAlign is off or nothing was retrieved
    spectral: Tensor | None  # (B, spectral_dim) spectral token s; None when nothing needs it
    hit_ids: Tensor  # (B, k') ids of the bank entries retrieved; (B, 0) without retrieval


class OmniFMStack(nn.Module):
    """Enrich backbone tokens ``r`` with global spectral knowledge; the backbone is untouched.

    Per batch: ``s = tokenizer(image)``; ``S_g`` = top-``k`` bank prototypes for ``s`` (GSKR);
    ``Z = ECA(r, S_g)``; ``[prefix(Z) || r || c]`` (PSP) through ``num_layers`` pre-norm
    transformer layers; SPAlign ``||s - mean(S_g)||^2``. Each component has a flag, so
    ablations and plain baselines run the same code:

    - ``gskr=False``: no retrieval; ECA attends to the client's own ``s`` instead of ``S_g``.
    - ``eca=False``: no cross-attention, no prefix.
    - ``psp=False``: ``Z`` is added to ``r`` instead of prepended; no suffix token, the
      ``suffix`` output is the mean of the tokens.
    - ``spalign=False``: ``align`` is zero.

    With every flag off and ``num_layers=0`` the stack returns ``r`` unchanged.

    Example:
        >>> import torch
        >>> stack = OmniFMStack(dim=32, spectral_dim=16, low_pass_size=8, num_heads=4)
        >>> out = stack(torch.rand(2, 3, 32, 32), torch.randn(2, 10, 32))
        >>> tuple(out.tokens.shape), tuple(out.suffix.shape)
        ((2, 10, 32), (2, 32))
    """

    def __init__(
        self,
        dim: int,
        spectral_dim: int = 128,
        low_pass_size: int = 16,
        spatial_dims: int = 2,
        top_k: int = 8,
        num_heads: int = 4,
        num_layers: int = 2,
        num_prefix: int | None = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        tokenizer_hidden_dim: int = 64,
        tokenizer_depth: int = 2,
        gskr: bool = True,
        eca: bool = True,
        psp: bool = True,
        spalign: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.spectral_dim = spectral_dim
        self.top_k = top_k
        self.gskr, self.eca_on, self.psp_on, self.spalign = gskr, eca, psp, spalign
        self.tokenizer = (
            SpectralTokenizer(
                spectral_dim,
                low_pass_size,
                spatial_dims,
                tokenizer_hidden_dim,
                tokenizer_depth,
                dropout,
            )
            if gskr or eca or spalign
            else None
        )
        self.eca = EmbeddingCrossAttention(dim, spectral_dim, num_heads, dropout) if eca else None
        self.psp = PrefixSuffixPrompt(dim, num_prefix) if psp else None
        layer = nn.TransformerEncoderLayer(
            dim,
            num_heads,
            int(dim * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = (
            nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            if num_layers
            else nn.Identity()
        )
        self.norm = nn.LayerNorm(dim) if num_layers else nn.Identity()

    def personal_parameter_names(self) -> list[str]:
        """Names (relative to this module) of parameters that must stay on their client."""
        return [f"psp.{n}" for n in self.psp.personal_parameter_names()] if self.psp else []

    def forward(self, image: Tensor, tokens: Tensor, bank: Retriever | None = None) -> StackOutput:
        """``image`` ``(B, C, *spatial)``, backbone ``tokens`` ``(B, L, dim)``, optional bank."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens must be (B, L, {self.dim}), got {tuple(tokens.shape)}")
        batch, length = tokens.shape[:2]
        s = self.tokenizer(image) if self.tokenizer is not None else None
        retrieved = tokens.new_zeros(batch, 0, self.spectral_dim)
        hit_ids = tokens.new_zeros(batch, 0).long()
        if self.gskr and bank is not None and s is not None and len(bank) > 0:
            retrieved, hit_ids = bank.retrieve(s.detach(), self.top_k)
        align = tokens.sum() * 0.0
        if self.spalign and s is not None:
            align = align + spalign_loss(s, retrieved)

        z = None
        if self.eca is not None and s is not None:
            context = retrieved if self.gskr else s[:, None, :]
            z = self.eca(tokens, context)
        if self.psp is not None:
            x = self.norm(self.layers(self.psp(z, tokens)))
            _, out, suffix = self.psp.split(x, length)
        else:
            out = self.norm(self.layers(tokens if z is None else tokens + z))
            suffix = out.mean(dim=1)
        return StackOutput(out, suffix, align, s, hit_ids)
