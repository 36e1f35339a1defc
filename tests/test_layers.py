"""The package's layers: every module imports on its own, and none imports from a layer above.

Layers, bottom up (a module may import its own package and anything below it):
functional; blocks, encoders, metrics; bank, datasets; datamodules, tasks; federated; recipe;
federated.flower; cli, report; __main__.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import omnifm

SRC = Path(omnifm.__file__).parent
LAYERS = (
    ("omnifm", "omnifm.functional"),
    ("omnifm.blocks", "omnifm.encoders", "omnifm.metrics"),
    ("omnifm.bank", "omnifm.datasets"),
    ("omnifm.datamodules", "omnifm.tasks"),
    ("omnifm.federated",),
    ("omnifm.recipe",),
    ("omnifm.federated.flower",),
    ("omnifm.cli", "omnifm.report"),
    ("omnifm.__main__",),
)


def _modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _unit(module: str) -> tuple[int, str]:
    """The layer of ``module`` and the package (layer entry) it belongs to."""
    matches = [
        (len(entry), rank, entry)
        for rank, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or module.startswith(f"{entry}.")
    ]
    _, rank, entry = max(matches)
    return rank, entry


def _imports(module: str) -> set[str]:
    """Every ``omnifm`` module ``module`` imports, at the top or inside a function."""
    path = SRC.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "omnifm" or name.startswith("omnifm.")}


def test_no_module_imports_from_a_layer_above_or_beside_it() -> None:
    wrong = []
    for module in _modules():
        rank, unit = _unit(module)
        for imported in _imports(module):
            their_rank, their_unit = _unit(imported)
            if their_rank > rank or (their_rank == rank and their_unit != unit):
                wrong.append(f"{module} (layer {rank}) imports {imported} (layer {their_rank})")
    assert not wrong, "\n".join(wrong)


def test_the_layers_name_every_package() -> None:
    unlisted = [m for m in _modules() if m != "omnifm" and _unit(m)[1] == "omnifm"]
    assert not unlisted, f"give these a layer in LAYERS: {unlisted}"


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Each module first, with no omnifm module loaded before it: an import cycle that only
    works from one entry point fails here. Optional extras that are not installed (Flower)
    are left out."""
    optional = ("flwr",)
    script = f"""
import importlib, json, sys
failed = {{}}
for name in {_modules()!r}:
    for loaded in [m for m in sys.modules if m == "omnifm" or m.startswith("omnifm.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name not in {optional!r}:  # an optional extra that is not installed
            failed[name] = repr(err)
    except Exception as err:
        failed[name] = repr(err)
print(json.dumps(failed))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600
    )
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, failed
