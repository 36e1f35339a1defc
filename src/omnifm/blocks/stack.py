"""The OmniFM block stack: spectral tokenizer, retrieval, ECA, PSP and transformer layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from omnifm.blocks.attention import EmbeddingCrossAttention
from omnifm.blocks.prompt import PrefixSuffixPrompt
from omnifm.blocks.retrieval import Retriever
from omnifm.blocks.tokenizer import SpectralTokenizer
from omnifm.functional import contrastive_spalign_loss, spalign_loss, spread_floor_loss

__all__ = ["OmniFMStack", "StackOutput", "check_stack_args"]


@dataclass
class StackOutput:
    """What the stack returns for a batch."""

    tokens: Tensor  # (B, L, dim) enriched tokens at the positions of the input tokens
    suffix: Tensor  # (B, dim) output at the suffix token (mean of tokens when PSP is off)
    align: Tensor  # scalar SPAlign term; zero when SPAlign is off or nothing was retrieved
    spectral: Tensor | None  # (B, spectral_dim) spectral token s; None when nothing needs it
    hit_ids: Tensor  # (B, k') ids of the bank entries retrieved; (B, 0) without retrieval


def check_stack_args(
    dim: int, num_heads: int, top_k: int, gskr: bool, name: Callable[[str], str] = str
) -> None:
    """Reject settings the stack cannot build, or that silently switch the method off; ``name``
    turns an argument's name into the user's (a recipe key, e.g. ``model.init_args.embed_dim``)."""
    if dim < 1 or num_heads < 1:
        raise ValueError(f"{name('dim')}={dim} and {name('num_heads')}={num_heads} must be >= 1")
    if dim % num_heads:
        up = -(-dim // num_heads) * num_heads
        down = max(h for h in range(1, num_heads + 1) if dim % h == 0)
        raise ValueError(
            f"{name('dim')}={dim} must be divisible by {name('num_heads')}={num_heads} (the "
            f"attention heads split the features evenly): set {name('dim')} to a multiple of "
            f"{num_heads} (e.g. {up}) or {name('num_heads')} to a divisor of {dim} (e.g. {down})"
        )
    if gskr and top_k < 1:
        raise ValueError(
            f"{name('top_k')}={top_k} retrieves no prototypes: GSKR, ECA's global context and "
            f"SPAlign would be silently off in a run still called OmniFM. Set {name('top_k')} "
            f">= 1 (8 in the recipes), or switch retrieval off on purpose with "
            f"{name('gskr')}=false (an ablation)"
        )


class OmniFMStack(nn.Module):
    """Enrich backbone tokens ``r`` with global spectral knowledge; the backbone is untouched.

    Per batch: ``s = tokenizer(image)``; ``S_g`` = top-``k`` bank prototypes for ``s`` (GSKR);
    ``Z = ECA(r, [s || S_g])``; ``[prefix(Z) || r || c]`` (PSP) through ``num_layers``
    pre-norm transformer layers; SPAlign. Each component has a flag, so ablations and plain
    baselines run the same code:

    - ``gskr=False``: no retrieval; ECA attends to the client's own ``s`` instead of ``S_g``.
    - ``eca=False``: no cross-attention, no prefix.
    - ``psp=False``: ``Z`` is added to ``r`` instead of prepended; no suffix token, the
      ``suffix`` output is the mean of the tokens.
    - ``spalign=False``: ``align`` is zero.

    With every flag off and ``num_layers=0`` the stack returns ``r`` unchanged.

    Where this departs from the paper, and why (measured on the quickstart phantoms; see
    the README's method paragraph): with ECA attending to ``S_g`` alone and the paper's
    SPAlign ``||s - mean(S_g)||^2`` as the tokenizer's only signal, every image of every
    modality ended with the same token after 8 rounds (cosine 0.999+), so retrieval and ECA
    carried nothing. Two changes keep the tokens informative:

    - ``self_context=True``: ECA's keys and values are ``[s || S_g]``, so the task's
      gradient reaches the tokenizer (retrieval itself stays a non-differentiable top-k);
    - ``alignment="contrastive"``: SPAlign as InfoNCE, ``s`` pulled to its retrieved
      prototypes and pushed from the next ``negatives`` ones
      (``omnifm.functional.contrastive_spalign_loss``), plus a floor under the batch's spread
      of tokens (``spread_floor``, ``omnifm.functional.spread_floor_loss``): InfoNCE has no
      gradient at collapse, and on MedMNIST the task's gradient alone walked the tokens
      there after 20 rounds. ``alignment="centroid"`` is the paper's form.

    ``standardize`` (on by default) standardises the tokenizer's frequency bins with running
    statistics shared by the federation (``omnifm.blocks.tokenizer.SpectralStandardize``);
    ``temperature`` and ``negatives`` (candidates retrieved beyond the ``top_k`` positives)
    set the contrastive SPAlign.

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
        alignment: Literal["contrastive", "centroid"] = "contrastive",
        temperature: float = 0.1,
        negatives: int = 32,
        spread_floor: float = 0.5,
        self_context: bool = True,
        standardize: bool = True,
    ) -> None:
        check_stack_args(dim, num_heads, top_k, gskr)
        super().__init__()
        self.dim = dim
        self.spectral_dim = spectral_dim
        self.top_k = top_k
        self.gskr, self.eca_on, self.psp_on, self.spalign = gskr, eca, psp, spalign
        if temperature <= 0 or negatives < 0 or spread_floor < 0:
            raise ValueError(
                f"the contrastive SPAlign needs temperature > 0, negatives >= 0 and "
                f"spread_floor >= 0, got temperature={temperature}, negatives={negatives}, "
                f"spread_floor={spread_floor}"
            )
        self.alignment, self.temperature = alignment, temperature
        self.negatives, self.self_context = negatives, self_context
        self.spread_floor = spread_floor
        self.tokenizer = (
            SpectralTokenizer(
                spectral_dim,
                low_pass_size,
                spatial_dims,
                tokenizer_hidden_dim,
                tokenizer_depth,
                dropout,
                standardize,
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
        candidates = tokens.new_zeros(batch, 0, self.spectral_dim)
        hit_ids = tokens.new_zeros(batch, 0).long()
        if self.gskr and bank is not None and s is not None and len(bank) > 0:
            contrast = self.spalign and self.alignment == "contrastive"
            k = self.top_k + self.negatives if contrast else self.top_k
            candidates, hit_ids = bank.retrieve(s.detach(), k)
            hit_ids = hit_ids[:, : self.top_k]
        retrieved = candidates[:, : self.top_k]
        align = tokens.sum() * 0.0
        if self.spalign and s is not None:
            if self.alignment == "contrastive":
                loss = contrastive_spalign_loss(s, candidates, self.top_k, self.temperature)
                if candidates.shape[1]:  # like SPAlign itself, only where something was retrieved
                    loss = loss + spread_floor_loss(s, self.spread_floor)
            else:
                loss = spalign_loss(s, retrieved)
            align = align + loss

        z = None
        if self.eca is not None and s is not None:
            own = s[:, None, :]
            if not self.gskr:
                context = own
            elif self.self_context:
                context = torch.cat([own, retrieved.to(own.dtype)], dim=1)
            else:
                context = retrieved
            z = self.eca(tokens, context)
        if self.psp is not None:
            x = self.norm(self.layers(self.psp(z, tokens)))
            _, out, suffix = self.psp.split(x, length)
        else:
            out = self.norm(self.layers(tokens if z is None else tokens + z))
            suffix = out.mean(dim=1)
        return StackOutput(out, suffix, align, s, hit_ids)
