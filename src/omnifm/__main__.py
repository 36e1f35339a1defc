"""The ``omnifm`` console script (also ``python -m omnifm``).

``omnifm report ...`` reads run folders and needs no Lightning, whose import (with torchmetrics
and transformers) takes seconds; every other subcommand is the LightningCLI in ``omnifm.cli``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(args: Sequence[str] | None = None) -> None:
    """Dispatch ``report`` to ``omnifm.report``, everything else to ``omnifm.cli``."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["report"]:
        from omnifm.report import main as report

        report(argv[1:])
        return
    from omnifm.cli import main as cli

    cli(None if args is None else argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
