"""Splits by fraction: the one check of ``val_fraction`` / ``test_fraction``, and the seeded
split of a list of items into train, val and test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from omnifm.datasets.base import Split

__all__ = ["check_fractions", "split_items"]


def check_fractions(
    val_fraction: float, test_fraction: float, needs_val: bool = False, needs_test: bool = False
) -> None:
    """Raise one ValueError unless ``val_fraction`` and ``test_fraction`` are shares in [0, 1)
    (above 0 where ``needs_val`` / ``needs_test``) with a sum below 1, leaving a train split."""
    shares = {
        "val_fraction": (val_fraction, needs_val),
        "test_fraction": (test_fraction, needs_test),
    }
    if all((f > 0 if needed else f >= 0) and f < 1 for f, needed in shares.values()) and (
        val_fraction + test_fraction < 1
    ):
        return
    bounds = [f"{'0 <' if needed else '0 <='} {name} < 1" for name, (_, needed) in shares.items()]
    raise ValueError(
        f"need {', '.join(bounds)} and val_fraction + test_fraction < 1, got val_fraction="
        f"{val_fraction} and test_fraction={test_fraction}; set them to shares of the data such "
        "as 0.1 and 0.2, leaving the rest for training"
    )


def split_items(
    items: Sequence[Any], split: Split, val_fraction: float, test_fraction: float, seed: int
) -> list[Any]:
    """The `split` part of `items` after a seeded shuffle (test first, then val, the rest
    train); each split gets at least one item when its fraction is above zero."""
    check_fractions(val_fraction, test_fraction)
    n = len(items)
    sizes = [max(round(f * n), 1) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    if sum(sizes) >= n:
        raise ValueError(
            f"{n} items are too few for a train split beside {sizes[1]} val and {sizes[0]} test "
            "items; add data or lower val_fraction / test_fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    bounds = {"test": (0, sizes[0]), "val": (sizes[0], sum(sizes)), "train": (sum(sizes), n)}
    start, stop = bounds[split]
    return [items[i] for i in sorted(order[start:stop])]
