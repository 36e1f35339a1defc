"""The tail every benchmark result file ends with: how to rerun it and what it ran on.

A script notes its start with ``RunRecord.begin(__file__, argv)`` and ends its markdown with
``record.footer(...)``: the exact command, the library's git state, the date and wall time,
then the machine (device, CPU, torch threads, load average at start and end, versions).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from _machine import available_cores, cpu_model, load_average  # benchmarks/_machine.py

__all__ = ["RunRecord", "git_state", "package_version"]

REPO = Path(__file__).resolve().parents[1]


def git_state() -> str:
    """The checkout's commit, and which files under src/ differ from it (the library timed)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
        status = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return f"{commit}, src/ as committed"
    return f"{commit} with uncommitted changes in {', '.join(changed)}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout


def package_version(package: str) -> str:
    """The version of ``package``: its ``__version__`` where the script imported it (torch's
    includes the build, e.g. ``+cu130``), else the installed distribution's, without importing
    it."""
    found = getattr(sys.modules.get(package), "__version__", None)
    if found is not None:
        return str(found)
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python <script> <args>`` as run from the repository root (``argv``: the script's
    arguments; ``None``: this process's)."""
    path = Path(script).resolve()
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + shlex.join([str(shown), *args])


@dataclass(frozen=True)
class RunRecord:
    """What a benchmark notes as it starts, for the footer of its result file."""

    command: str
    clock: float
    load_start: str
    git_start: str

    @classmethod
    def begin(cls, script: str, argv: Sequence[str] | None = None) -> RunRecord:
        """Note the command, the clock, the load average and the library's git state now."""
        return cls(command_line(script, argv), time.perf_counter(), load_average(), git_state())

    def wall(self) -> float:
        """Seconds since ``begin``."""
        return time.perf_counter() - self.clock

    def footer(
        self,
        *,
        threads: str,
        device: str = "cpu",
        versions: Sequence[str] = (),
        notes: Sequence[str] = (),
        wall: float | None = None,
        wall_note: str = "",
    ) -> list[str]:
        """The ``## Run`` and ``## Machine`` sections (markdown lines, ending blank).

        ``threads``: the torch threads, as the script sets them; ``versions``: more packages
        (import names) listed after Python, torch, lightning and omnifm; ``notes``: more
        machine lines;
        ``wall``: seconds to report instead of the time since ``begin`` (``wall_note`` says
        what they cover)."""
        git_end = git_state()
        library = self.git_start + (
            "" if git_end == self.git_start else f" at the start, {git_end} at the end"
        )
        packages = ("torch", "lightning", "omnifm", *versions)
        seconds = self.wall() if wall is None else wall
        return [
            "## Run",
            "",
            f"- command: `{self.command}`",
            f"- library: git {library}",
            f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- total wall time: {seconds:.1f} s" + (f" ({wall_note})" if wall_note else ""),
            "",
            "## Machine",
            "",
            f"- device: {device}",
            f"- CPU: {cpu_model()}, {available_cores()} cores available "
            f"({os.cpu_count()} logical CPUs); torch threads: {threads}",
            f"- load average (1/5/15 min) at start: {self.load_start}, at end: "
            f"{load_average()} (other processes on the machine compete for the same cores)",
            f"- Python {platform.python_version()}, "
            + ", ".join(f"{p} {package_version(p)}" for p in packages),
            *(f"- {note}" for note in notes),
            "",
        ]

    def write(
        self, path: Path, title: str, intro: str, body: Sequence[str], *, threads: str, device: str
    ) -> None:
        """Write a result file: ``# title``, the ``intro`` paragraph, the ``body`` lines and the
        footer; print where it went."""
        lines = [
            f"# {title}",
            "",
            intro,
            "",
            *body,
            "",
            *self.footer(threads=threads, device=device),
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
        print(f"wrote {path} in {self.wall():.1f} s")
