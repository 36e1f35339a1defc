"""Quality of a fused image against its two sources, as torchmetrics Metrics.

Every metric here is updated with ``(fused, first, second)``, grey images ``(B, 1, H, W)`` in
[0, 1] (for colour fusion: the luminance Y), and averages a per-image score over images, so
one ``MetricCollection`` takes them all and clients' states merge exactly. torchmetrics
supplies VIF, SSIM and mutual information of label vectors; it has no image entropy and no
"fused against two sources" form, which is what this module adds.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import (
    structural_similarity_index_measure,
    visual_information_fidelity,
)

from omnifm.functional.fusion import image_entropy, image_mutual_information

__all__ = ["FusedEntropy", "FusedMutualInformation", "FusedSSIM", "FusedVIF", "FusionMetric"]


class FusionMetric(Metric):
    """Mean over images of ``score(fused, first, second) -> (B,)``; subclasses give ``score``."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def score(self, fused: Tensor, first: Tensor, second: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, fused: Tensor, first: Tensor, second: Tensor) -> None:
        if not fused.shape == first.shape == second.shape or fused.ndim != 4:
            raise ValueError(
                "fused and source images must have the same (B, 1, H, W) shape, got "
                f"{tuple(fused.shape)}, {tuple(first.shape)} and {tuple(second.shape)}"
            )
        values = self.score(fused.float(), first.float(), second.float())
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class FusedVIF(FusionMetric):
    """Pixel-domain visual information fidelity (torchmetrics), the mean of VIF(A -> F) and
    VIF(B -> F) with each source as the reference. Images are scaled to [0, 255] first:
    VIF's visual-noise variance ``sigma_n_sq = 2`` is defined on 8-bit grey levels. Needs
    images of at least 41x41."""

    def __init__(self, sigma_n_sq: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sigma_n_sq = sigma_n_sq

    def score(self, fused: Tensor, first: Tensor, second: Tensor) -> Tensor:
        f = fused * 255.0
        return 0.5 * sum(
            visual_information_fidelity(f, s * 255.0, self.sigma_n_sq, reduction="none")
            for s in (first, second)
        )


class FusedSSIM(FusionMetric):
    """SSIM (torchmetrics, data range 1) of the fused image to one source: ``first``,
    ``second``, or ``mean`` of both."""

    def __init__(self, source: Literal["first", "second", "mean"] = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        if source not in ("first", "second", "mean"):
            raise ValueError(f"unknown source {source!r}; use 'first', 'second' or 'mean'")
        self.source = source

    def score(self, fused: Tensor, first: Tensor, second: Tensor) -> Tensor:
        chosen = {"first": (first,), "second": (second,), "mean": (first, second)}[self.source]
        values = [
            structural_similarity_index_measure(fused, s, data_range=1.0, reduction="none")
            for s in chosen
        ]
        return torch.stack(values).mean(dim=0)


class FusedMutualInformation(FusionMetric):
    """MI(F, A) + MI(F, B) in bits over 256 grey levels, the fusion literature's MI."""

    def score(self, fused: Tensor, first: Tensor, second: Tensor) -> Tensor:
        return image_mutual_information(fused, first) + image_mutual_information(fused, second)


class FusedEntropy(FusionMetric):
    """Shannon entropy (bits, 256 grey levels) of the fused image; the sources are unused."""

    def score(self, fused: Tensor, first: Tensor, second: Tensor) -> Tensor:
        return image_entropy(fused)
