"""Where an in-process federation keeps what each client keeps across rounds: its personal
weights and its strategy's state (SCAFFOLD's control variate, Ditto's personal model, ...).

States stay on the CPU up to a memory budget; past it, the least recently used ones are
written to the run folder (one safetensors file per client and round) and read back when the
client is next sampled. A checkpoint names the files it needs, and files no checkpoint needs
any more are deleted after the next one, so a resumed run reads the states of its round.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["ClientStore", "nbytes", "pack", "unpack"]

log = logging.getLogger("omnifm")
Tensors = dict[str, Tensor]


def nbytes(tensors: Tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def pack(personal: Tensors, strategy: Tensors) -> Tensors:
    """A client's personal and strategy tensors as one flat dict (one file on disk)."""
    return {
        **{f"personal/{k}": v for k, v in personal.items()},
        **{f"strategy/{k}": v for k, v in strategy.items()},
    }


def unpack(state: Tensors) -> tuple[Tensors, Tensors]:
    """The personal and strategy tensors of ``pack``'s dict."""
    parts: dict[str, Tensors] = {"personal": {}, "strategy": {}}
    for key, value in state.items():
        part, name = key.split("/", 1)
        parts[part][name] = value
    return parts["personal"], parts["strategy"]


class ClientStore:
    """Every client's persistent tensors, in memory up to ``budget`` bytes, the rest on disk.

    Args:
        budget: bytes of client states kept in memory (``None``: no limit).
        folder: where spilled states go (called when the first one is written, so a run
            folder is only needed then); a file name is the client's and the round's.
    """

    def __init__(self, budget: int | None, folder: Callable[[], Path]) -> None:
        self.budget = budget
        self.folder = folder
        self.memory: OrderedDict[str, Tensors] = OrderedDict()  # least recently used first
        self.files: dict[str, str] = {}  # client -> file name, for states not in memory
        self.rounds: dict[str, int] = {}  # client -> round its state was written in
        self._clean: set[str] = set()  # in memory and identical to its file
        self._used: set[str] = set()  # file names the last checkpoint needs

    def __contains__(self, client: str) -> bool:
        return client in self.memory or client in self.files

    def __len__(self) -> int:
        return len(set(self.memory) | set(self.files))

    @property
    def memory_bytes(self) -> int:
        return sum(map(nbytes, self.memory.values()))

    def get(self, client: str) -> Tensors | None:
        """``client``'s state (read from disk if it was spilled); ``None`` if it has none."""
        if client in self.memory:
            self.memory.move_to_end(client)
            return self.memory[client]
        if client not in self.files:
            return None
        state = load_file(self.folder() / self.files[client])
        self.memory[client] = state
        self._clean.add(client)
        self._fit()
        return self.memory.get(client, state)

    def put(self, client: str, state: Tensors, round_: int) -> None:
        """``client``'s new state, produced in round ``round_``."""
        self.memory[client] = state
        self.memory.move_to_end(client)
        self.rounds[client] = round_
        self._clean.discard(client)
        self.files.pop(client, None)
        self._fit()

    def _fit(self) -> None:
        """Spill the least recently used states until the rest fits the budget."""
        if self.budget is None:
            return
        total = self.memory_bytes
        while total > self.budget and self.memory:
            client, state = self.memory.popitem(last=False)
            total -= nbytes(state)
            if client not in self._clean:
                self.files[client] = self._write(client, state)
            self._clean.discard(client)  # a clean state's file is still in self.files

    def _write(self, client: str, state: Tensors) -> str:
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^\w.-]", "_", client)
        name = f"{safe}-{zlib.crc32(client.encode()):08x}.r{self.rounds.get(client, 0)}.safetensors"
        tmp = folder / f".{name}.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, folder / name)  # a crash never leaves half a file under its name
        return name

    # checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """In-memory states and the names of the spilled ones' files (kept until a later
        checkpoint no longer needs them)."""
        files = {c: f for c, f in self.files.items() if c not in self.memory}
        self._used = set(files.values())
        return {
            "memory": dict(self.memory),
            "files": files,
            "rounds": dict(self.rounds),
        }

    def collect(self) -> None:
        """Delete spilled files the last saved checkpoint no longer names (older states)."""
        folder = self.folder()
        if not folder.is_dir():
            return
        for path in folder.glob("*.safetensors"):
            if path.name not in self._used and path.name not in self.files.values():
                path.unlink()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [f for f in state["files"].values() if not (self.folder() / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"the checkpoint's client states {missing[:3]} are not in {self.folder()}: "
                "resume from the run folder the checkpoint was written in, with its "
                "client_states folder"
            )
        self.memory = OrderedDict(state["memory"])
        self.files = dict(state["files"])
        self.rounds = dict(state.get("rounds", {}))
        self._clean = set()
        self._used = set(self.files.values())
        self._fit()
