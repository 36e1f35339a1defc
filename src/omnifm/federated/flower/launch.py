"""Start a recipe on Flower: its simulation on this machine, or a run on a deployment."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
import torch

from omnifm.federated.config import FederationConfig
from omnifm.federated.flower.clientapp import make_client_app
from omnifm.federated.flower.serverapp import make_server_app
from omnifm.federated.rounds import FederationError

__all__ = ["run_flower", "simulate", "submit", "write_app"]

log = logging.getLogger("omnifm")
APP_NAME = "omnifm-federation"


def run_flower(
    recipe: str, config: FederationConfig, num_clients: int, ckpt_path: str | None = None
) -> list[dict[str, Any]]:
    """``omnifm fit --federation.backend flower``: a simulation, or a run on the SuperLink
    named by ``federation.flower.superlink``. Returns the final test rows (simulation) or
    an empty list (deployment: the results are in the run folder on the SuperLink's machine)."""
    if ckpt_path is not None:
        raise ValueError(
            "a Flower run cannot resume from a checkpoint: the clients' personal states live "
            "on the sites and end with the run; start a new run without --ckpt_path"
        )
    if config.flower.superlink is None:
        return simulate(recipe, config, num_clients)
    submit(recipe, config.flower.superlink)
    return []


def simulate(recipe: str, config: FederationConfig, num_clients: int) -> list[dict[str, Any]]:
    """Flower's simulation runtime (Ray): one simulated node per client of the scenario."""
    from flwr.simulation import run_simulation

    results: list[dict[str, Any]] = []
    options = config.flower
    gpus = options.client_gpus
    if gpus is None:  # the visible GPUs shared by all simulated clients, at most one each
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        gpus = min(1.0, count / num_clients)
    backend = {"client_resources": {"num_cpus": options.client_cpus, "num_gpus": gpus}}
    log.info("Flower simulation: %d nodes, resources per node %s", num_clients, backend)
    run_simulation(
        make_server_app(recipe, results),
        make_client_app(recipe),
        num_supernodes=num_clients,
        backend_config=backend,  # type: ignore[arg-type]
    )
    if not results:
        raise FederationError("the Flower simulation ended without results; see its log above")
    return results


def write_app(recipe: str, folder: Path) -> Path:
    """A Flower App folder whose run config carries the recipe (what ``flwr run`` sends)."""
    project = {
        "project": {
            "name": APP_NAME,
            "version": "1.0.0",
            "description": "An OmniFM federation; the recipe travels in the run config",
            "license": "Apache-2.0",
            "dependencies": [],  # OmniFM is installed on every machine beforehand
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "omnifm",
                    "components": {
                        "serverapp": "omnifm.federated.flower.serverapp:server_app",
                        "clientapp": "omnifm.federated.flower.clientapp:client_app",
                    },
                    "config": {"recipe": recipe},
                }
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project, multiline_strings=True))
    (folder / "README.md").write_text("Written by `omnifm fit --federation.backend flower`.\n")
    return folder


def submit(recipe: str, superlink: str) -> None:
    """``flwr run`` the recipe on the SuperLink connection ``superlink`` of the Flower
    configuration (``$FLWR_HOME/config.toml``), streaming its log; raises if the run failed."""
    flwr = _flwr()
    with tempfile.TemporaryDirectory(prefix="omnifm-flower-app-") as tmp:
        app = write_app(recipe, Path(tmp) / APP_NAME)
        command = [flwr, "run", str(app), superlink, "--stream"]
        log.info("submitting to SuperLink %r: %s", superlink, " ".join(command[:4]))
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        run_id = None
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            found = re.search(r"started run (\d+)", line)
            run_id = run_id or (found.group(1) if found else None)
        code = proc.wait()
    if code != 0 or run_id is None:
        raise FederationError(
            f"`flwr run ... {superlink}` failed (exit code {code}); is the SuperLink up, and "
            f"is {superlink!r} a SuperLink connection in $FLWR_HOME/config.toml?"
        )
    status = _run_status(flwr, run_id, superlink)
    if "completed" not in status:
        raise FederationError(f"Flower run {run_id} ended with status {status!r}; see its log")
    log.info("Flower run %s %s; its run folder is on the SuperLink's machine", run_id, status)


def _run_status(flwr: str, run_id: str, superlink: str) -> str:
    out = subprocess.run(
        [flwr, "ls", "--run-id", run_id, superlink, "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    try:
        runs = json.loads(out).get("runs", [])
    except json.JSONDecodeError:
        return f"unknown ({out.strip()[:200]})"
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def _flwr() -> str:
    """The ``flwr`` command of this environment."""
    local = Path(sys.executable).parent / "flwr"
    found = str(local) if local.is_file() else shutil.which("flwr")
    if found is None:
        raise FileNotFoundError("the `flwr` command is missing: pip install 'omnifm[flower]'")
    env_path = os.environ.get("PATH", "")
    if str(local.parent) not in env_path.split(os.pathsep):  # Flower starts its own commands
        os.environ["PATH"] = f"{local.parent}{os.pathsep}{env_path}"
    return found
