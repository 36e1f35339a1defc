"""Pure tensor functions: amplitude spectra, low-pass windows, SPAlign, retrieval, aggregation
(robust rules, server optimizers, client-drift corrections), private prototypes, image fusion
(YCbCr, gradients, fusion loss, entropy, mutual information), channel conversion."""

from omnifm.functional.aggregation import kmeans, proximal_term, weighted_average
from omnifm.functional.alignment import (
    contrastive_spalign_loss,
    cosine_topk,
    effective_rank,
    spalign_loss,
    spread_floor_loss,
)
from omnifm.functional.drift import (
    category_guidance_loss,
    control_variate_update,
    dynamic_regularizer,
    feddyn_server_update,
    model_contrastive_loss,
)
from omnifm.functional.fusion import (
    fusion_loss,
    gradient_magnitude,
    image_entropy,
    image_mutual_information,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from omnifm.functional.image import can_convert, to_channels
from omnifm.functional.privacy import PROTOTYPE_SENSITIVITY, private_centroids
from omnifm.functional.robust import (
    adaptive_step,
    coordinate_median,
    krum_select,
    momentum_step,
    trimmed_mean,
)
from omnifm.functional.spectral import amplitude_spectrum, low_pass

__all__ = [
    "PROTOTYPE_SENSITIVITY",
    "adaptive_step",
    "amplitude_spectrum",
    "can_convert",
    "category_guidance_loss",
    "contrastive_spalign_loss",
    "control_variate_update",
    "coordinate_median",
    "cosine_topk",
    "dynamic_regularizer",
    "effective_rank",
    "feddyn_server_update",
    "fusion_loss",
    "gradient_magnitude",
    "image_entropy",
    "image_mutual_information",
    "kmeans",
    "krum_select",
    "low_pass",
    "model_contrastive_loss",
    "momentum_step",
    "private_centroids",
    "proximal_term",
    "rgb_to_ycbcr",
    "spalign_loss",
    "spread_floor_loss",
    "to_channels",
    "trimmed_mean",
    "weighted_average",
    "ycbcr_to_rgb",
]
