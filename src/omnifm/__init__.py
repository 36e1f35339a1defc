"""OmniFM: modality-robust, task-agnostic federated learning for heterogeneous medical imaging."""

__version__ = "0.1.0"

__all__ = ["__version__"]
