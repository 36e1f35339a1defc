"""What the OmniFM stack retrieves from: any object with ``retrieve`` and a length.

The server's bank (``omnifm.bank``) and the snapshot a client receives implement it; the stack
depends only on this protocol, never on the bank's module.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    """Anything the OmniFM stack can retrieve spectral prototypes from."""

    dim: int

    def __len__(self) -> int: ...

    def retrieve(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` prototypes ``(B, k', dim)`` for ``queries`` ``(B, dim)`` and their ids."""
        ...
