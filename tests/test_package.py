"""Importing omnifm hides foreign warnings no user can act on, and nothing else."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import pytest
from lightning.pytorch.utilities._pytree import _tree_flatten

from omnifm import hide_foreign_warnings
from omnifm.federated.trainer import quiet_lightning


def _caught(hide: Callable[[], None]) -> list[str]:
    """Messages warned while Lightning flattens a step's output under ``hide``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the strictest setting, applied before ours
        with quiet_lightning() if hide is quiet_lightning else contextlib.nullcontext():
            if hide is not quiet_lightning:
                hide()
            _tree_flatten({"loss": 1.0})
            warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("hide", [quiet_lightning, hide_foreign_warnings])
def test_lightnings_leafspec_deprecation_is_hidden(hide: Callable[[], None]) -> None:
    shown = _caught(lambda: None)
    hidden = _caught(hide)
    assert any("LeafSpec" in m for m in shown)  # the trigger is real
    assert not any("LeafSpec" in m for m in hidden)
    assert "a warning of the user's own" in hidden  # the filter is targeted
