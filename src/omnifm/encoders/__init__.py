"""Backbones that turn images and text into tokens for the OmniFM stack."""

from omnifm.encoders.text import TextTokenEncoder, build_wordpiece_tokenizer
from omnifm.encoders.timm_encoder import TimmTokenEncoder
from omnifm.encoders.unet import TimmFeatureEncoder, UNetDecoder, UNetEncoder
from omnifm.encoders.volume import VolumeTokenEncoder

__all__ = [
    "TextTokenEncoder",
    "TimmFeatureEncoder",
    "TimmTokenEncoder",
    "UNetDecoder",
    "UNetEncoder",
    "VolumeTokenEncoder",
    "build_wordpiece_tokenizer",
]
