"""A Flower deployment on this machine: a SuperLink and one SuperNode per client, each its own
process on loopback without TLS. For trying a deployment, tests and benchmarks; a real one
runs the same commands on separate machines, with TLS (see the README)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["LocalDeployment", "free_port"]

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr live here


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalDeployment:
    """Start a SuperLink and one SuperNode per client (``--node-config client=NAME``) in
    ``folder``, with the SuperLink connection ``name`` in ``folder/flwr-home/config.toml``.

    Every process has its own process group, killed with its children on ``close``; logs are
    ``folder/<process>.log``. ``env`` adds environment variables (e.g. ``OMP_NUM_THREADS``).

    Example:
        >>> with LocalDeployment(tmp, ["ct", "mri"]) as link:  # doctest: +SKIP
        ...     os.environ["FLWR_HOME"] = str(link.home)
        ...     OmniFMCLI(["fit", "--config", recipe, "--federation.backend=flower",
        ...                f"--federation.flower.superlink={link.name}"])
    """

    def __init__(
        self,
        folder: Path,
        clients: list[str],
        name: str = "local",
        env: dict[str, str] | None = None,
        timeout: float = 180.0,
    ) -> None:
        self.folder = Path(folder)
        self.name = name
        self.port = free_port()
        self.home = self.folder / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.env = {**os.environ, **(env or {}), "FLWR_HOME": str(self.home)}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"  # Flower's commands
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        try:
            self._start(
                "superlink",
                "flower-superlink",
                *("--insecure", "--port", str(self.port)),
                "--disable-runtime-dependency-installation",  # OmniFM is installed here
            )
            for client in clients:
                self._start(
                    client,
                    "flower-supernode",
                    *("--insecure", "--superlink", f"127.0.0.1:{self.port}"),
                    *("--port", str(free_port()), "--node-config", f"client='{client}'"),
                )
            for client in clients:
                self.wait_for(client, "SuperNode ID", timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, command: str, *args: str) -> None:
        self.logs[name] = self.folder / f"{name}.log"
        with self.logs[name].open("w") as out:
            self.procs[name] = subprocess.Popen(
                [str(BIN / command), *args],
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed with its children
            )

    def log(self, name: str) -> str:
        """What process ``name`` (``superlink`` or a client) has logged so far."""
        return self.logs[name].read_text(errors="replace")

    def wait_for(self, name: str, needle: str, timeout: float, count: int = 1) -> None:
        """Until process ``name`` has logged ``needle`` ``count`` times; raises if it exits."""
        deadline = time.monotonic() + timeout
        while self.log(name).count(needle) < count:
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not log {needle!r} within {timeout:.0f} s:\n"
                    f"{self.log(name)[-3000:]}"
                )
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """Stop process ``name`` and its children: SIGTERM, then SIGKILL after 5 s."""
        proc = self.procs[name]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
                return

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
