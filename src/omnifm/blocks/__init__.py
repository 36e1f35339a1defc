"""Plain ``nn.Module`` building blocks of OmniFM (no Lightning, no federation)."""

from omnifm.blocks.attention import EmbeddingCrossAttention
from omnifm.blocks.bridge import DenseBridge
from omnifm.blocks.guidance import ConditionalValve, GlobalGuidance
from omnifm.blocks.prompt import PrefixSuffixPrompt
from omnifm.blocks.retrieval import Retriever
from omnifm.blocks.stack import OmniFMStack, StackOutput
from omnifm.blocks.tokenizer import SpectralTokenizer

__all__ = [
    "ConditionalValve",
    "DenseBridge",
    "EmbeddingCrossAttention",
    "GlobalGuidance",
    "OmniFMStack",
    "PrefixSuffixPrompt",
    "Retriever",
    "SpectralTokenizer",
    "StackOutput",
]
