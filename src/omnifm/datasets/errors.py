"""Data errors that name their client, and a stand-in for a client whose data cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from torch.utils.data import Dataset

__all__ = ["Unavailable", "naming"]


def _renamed(err: Exception, message: str) -> Exception:
    """An exception of ``err``'s type (where it can be built from a message) with ``message``."""
    try:
        return type(err)(message)
    except Exception:  # an exception type that needs other arguments
        return RuntimeError(message)


@contextmanager
def naming(who: str) -> Iterator[None]:
    """Prefix ``who`` (e.g. ``client 'ct'``) to any error raised inside, keeping its type
    where it can, so a failed read names the client as well as the file."""
    try:
        yield
    except Exception as err:
        if getattr(err, "omnifm_client", None):
            raise
        named = _renamed(err, f"{who}: {err}")
        named.omnifm_client = who  # type: ignore[attr-defined]
        raise named from err


class Unavailable(Dataset):
    """The split of a client whose files could not be read when the scenario was set up: any
    use (its length, an item) raises that error again, so the federation leaves the client out
    of each round with the reason instead of refusing to start."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def _raise(self) -> NoReturn:
        raise _renamed(self.error, str(self.error)) from self.error

    def __len__(self) -> int:
        self._raise()

    def __getitem__(self, index: int) -> Any:
        self._raise()
