"""Memory readings of the running process (Linux ``/proc``; zero where it is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def high_water_bytes() -> int:
    """``VmHWM``: the peak RSS of this process image only (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def current_rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tensor_bytes(states: list[dict[str, torch.Tensor]]) -> int:
    """Bytes of the distinct tensor storages in ``states`` (shared storages counted once)."""
    seen: dict[int, int] = {}
    for state in states:
        for t in state.values():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
