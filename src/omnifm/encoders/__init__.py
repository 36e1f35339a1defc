"""Backbones that turn images (and later text) into tokens for the OmniFM stack."""

from omnifm.encoders.timm_encoder import TimmTokenEncoder

__all__ = ["TimmTokenEncoder"]
