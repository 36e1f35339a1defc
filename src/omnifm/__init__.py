"""OmniFM: modality-robust, task-agnostic federated learning for heterogeneous medical imaging."""

import warnings

__version__ = "0.1.0"

__all__ = ["__version__", "hide_foreign_warnings"]


def hide_foreign_warnings() -> None:
    """Hide warnings that come from other libraries and that no user can act on.

    Lightning 2.6 builds torch's deprecated ``LeafSpec`` whenever it flattens a step's output;
    Python shows the warning again after every change of the warning filters, which every
    local Trainer makes: pages of it, for every client of every round. Applied at import, and
    again inside every federated fit and evaluation (``quiet_lightning``).
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


hide_foreign_warnings()
