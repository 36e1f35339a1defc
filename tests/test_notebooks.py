"""The notebooks run top to bottom (small settings) and are stored without outputs.

The notebooks run one after another in one kernel (this interpreter's ipykernel, working
directory ``notebooks/``), its namespace cleared before each: every notebook still runs from its
first cell with nothing defined, and the libraries are imported once instead of four times.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = [
    "01_spectral_invariance",
    "02_federated_quickstart",
    "03_spectral_bank",
    "04_new_task",
    "05_many_tasks",
]
DATA_VARIABLE = "OMNIFM_SHARED_DATA"  # where notebook 01 looks for ../shared/data


def run(name: str, kernel: KernelManager, shared_data: str | None = None) -> nbformat.NotebookNode:
    """Execute notebook ``name`` in ``kernel`` from a clean namespace; returns it with outputs."""
    env = f"os.environ[{DATA_VARIABLE!r}] = {shared_data!r}" if shared_data else ""
    reset = f"import os\nos.chdir({str(NOTEBOOKS)!r})\n{env}\n%reset -f"
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, km=kernel, timeout=300)
    with client.setup_kernel():
        reply = client.kc.execute_interactive(reset, timeout=60)
        assert reply["content"]["status"] == "ok"
        try:
            client.execute()  # raises CellExecutionError naming the failing cell
        finally:
            client.kc.execute_interactive(f"import os\nos.environ.pop({DATA_VARIABLE!r}, None)")
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def test_every_notebook_is_listed() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelManager]:
    """A python3 kernel of this interpreter, with the notebooks' small settings."""
    env = {
        **os.environ,
        "OMNIFM_NOTEBOOK_SMALL": "1",
        "OMNIFM_NOTEBOOK_OUTPUT": str(tmp_path_factory.mktemp("notebook_runs")),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    with pytest.MonkeyPatch.context() as patch:  # the venv's kernel spec comes first
        patch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(env=env, cwd=str(NOTEBOOKS))
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, kernel: KernelManager) -> None:
    notebook = run(name, kernel)

    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook))  # plots were drawn


def test_spectral_notebook_falls_back_to_phantoms(kernel: KernelManager, tmp_path: Path) -> None:
    notebook = run("01_spectral_invariance", kernel, shared_data=str(tmp_path / "absent"))

    printed = "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream")
    assert "using generated phantoms" in printed
    assert "5 modalities: cross-modal similarity keeps" in printed
