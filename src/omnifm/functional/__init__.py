"""Pure tensor functions: amplitude spectra, low-pass windows, SPAlign, retrieval, aggregation."""

from omnifm.functional.aggregation import kmeans, proximal_term, weighted_average
from omnifm.functional.alignment import cosine_topk, spalign_loss
from omnifm.functional.spectral import amplitude_spectrum, low_pass

__all__ = [
    "amplitude_spectrum",
    "cosine_topk",
    "kmeans",
    "low_pass",
    "proximal_term",
    "spalign_loss",
    "weighted_average",
]
