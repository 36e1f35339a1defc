"""What a recipe from the coordinator may make a site import: an allowlist of classes.

A recipe is instantiated by LightningCLI (jsonargparse), which imports and calls whatever it
names: ``class_path`` values anywhere (optimizers, schedulers, callbacks, loggers, plugins,
strategies), bare import strings given to class-, callable- or type-typed arguments
(``optimizer: subprocess.Popen``), short class names (``callbacks: [ModelCheckpoint]``),
nested configs written as YAML inside a string, and paths or URLs of further config files
(``data: path/to/data.yaml``), which it reads. So before a site parses a recipe that arrived
with the run, :meth:`Allowlist.check_recipe` walks the YAML and refuses

- a ``class_path``, or a dotted string naming an importable module's object, that is not in
  the allowlist;
- a string that names a file on this site, or a URL: a coordinator's recipe is self-contained
  (``omnifm fit --config RECIPE --print_config``), and a nested file would be read;
- a ``__path__`` key.

After parsing, before anything is instantiated, :meth:`Allowlist.check_parsed` checks what
jsonargparse resolved (short names included) against the same list.

Entries are exact import paths (``lightning.pytorch.loggers.CSVLogger``) or ``module.*``
(any class or function defined in that module or below it). A path is imported only when its
module lies on the way to an entry's module, and it is allowed by the object it resolves to,
so a re-export (``omnifm.federated.flower.launch.subprocess.Popen``) is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

__all__ = [
    "DEFAULT_ALLOWED",
    "NODE_CONFIG_KEY",
    "SERVER_ENV",
    "SERVER_HOW",
    "SITE_HOW",
    "Allowlist",
    "RecipeRefused",
]

NODE_CONFIG_KEY = "allowed-classes"  # a SuperNode's extension: --node-config "allowed-classes=..."
SERVER_ENV = "OMNIFM_ALLOWED_CLASSES"  # the same extension for the ServerApp, where the link runs
SITE_HOW = f"this SuperNode's node config: --node-config \"{NODE_CONFIG_KEY}='{{path}}'\""
SERVER_HOW = f"the environment of the SuperLink (where the ServerApp runs): {SERVER_ENV}='{{path}}'"

DEFAULT_ALLOWED: tuple[str, ...] = (
    "omnifm.tasks.*",
    "omnifm.datamodules.*",
    "omnifm.datasets.*",
    "omnifm.blocks.*",
    "omnifm.federated.strategies.*",
    "omnifm.federated.aggregators.*",
    "torch.optim.*",  # optimizers and learning-rate schedulers
    "lightning.pytorch.loggers.TensorBoardLogger",
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.GradientAccumulationScheduler",
    "lightning.pytorch.callbacks.LearningRateMonitor",
    "lightning.pytorch.callbacks.ModelSummary",
    "lightning.pytorch.callbacks.RichModelSummary",
    "lightning.pytorch.callbacks.RichProgressBar",
    "lightning.pytorch.callbacks.TQDMProgressBar",
    "lightning.pytorch.callbacks.Timer",
)
"""The library's own tasks, datamodules, blocks and strategies, torch's optimizers and
schedulers, and Lightning loggers and callbacks that only log, time or stop early."""

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MAX_LISTED = 10


class RecipeRefused(ValueError):
    """A recipe from the coordinator names something this site does not allow."""


class Allowlist:
    """Import paths a recipe from outside may name; ``entries`` extend :data:`DEFAULT_ALLOWED`
    unless ``defaults`` is false. ``how`` says how to extend it, in the refusals (``{path}``: the
    refused import path)."""

    def __init__(
        self, entries: Iterable[str] = (), defaults: bool = True, how: str = SITE_HOW
    ) -> None:
        self.entries = tuple(dict.fromkeys([*(DEFAULT_ALLOWED if defaults else ()), *entries]))
        self.how = how
        self.modules: list[str] = []  # of "module.*" entries
        self.objects: list[Any] = []  # of exact entries
        self.scopes: set[str] = set()  # modules an entry lives in: paths there may be imported
        for entry in self.entries:
            if not _IDENTIFIER_PATH.fullmatch(entry.removesuffix(".*")) or "." not in entry:
                raise ValueError(
                    f"allowlist entry {entry!r} is not an import path (package.module.Class) or "
                    "a module followed by .* (package.module.*)"
                )
            if entry.split(".")[0] == "jsonargparse":
                raise ValueError(f"allowlist entry {entry!r}: jsonargparse cannot be allowed")
            if entry.endswith(".*"):
                self.modules.append(entry[:-2])
                self.scopes.add(entry[:-2])
            else:
                self.scopes.add(entry.rsplit(".", 1)[0])
                try:
                    self.objects.append(_import(entry))
                except Exception as err:
                    raise ValueError(
                        f"allowlist entry {entry!r} cannot be imported on this machine: {err}"
                    ) from err

    @classmethod
    def from_text(cls, text: object, how: str = SITE_HOW) -> Allowlist:
        """The default list extended by ``text``'s entries (separated by spaces or commas)."""
        entries = [e for e in re.split(r"[\s,]+", str(text or "")) if e]
        return cls(entries, how=how)

    # the checks ------------------------------------------------------------------------------
    def allows(self, path: str) -> bool:
        """Whether import path ``path`` names an allowed class or function (imported only if it
        lies in an entry's module or on the way to one)."""
        if not _DOTTED.fullmatch(path) or path.split(".")[0] == "jsonargparse":
            return False
        module, name = path.rsplit(".", 1)
        candidates = [(module, [name])]  # jsonargparse's fallback: one attribute level up
        if "." in module:
            parent, attribute = module.rsplit(".", 1)
            candidates.append((parent, [attribute, name]))
        for module, names in candidates:
            if not self._in_scope(module):
                continue
            try:
                obj: Any = importlib.import_module(module)
                for n in names:
                    obj = getattr(obj, n)
            except ModuleNotFoundError:
                continue
            except Exception:
                return False
            return self.allows_object(obj)
        return False

    def allows_object(self, obj: Any) -> bool:
        """Whether ``obj`` is an exact entry, or a class or function defined in a ``.*`` one."""
        if any(obj is allowed for allowed in self.objects):
            return True
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            return False
        where = getattr(obj, "__module__", None) or ""
        return any(where == m or where.startswith(m + ".") for m in self.modules)

    def check_recipe(self, config: Any, folders: Iterable[Path | str] = ()) -> None:
        """Raise :class:`RecipeRefused` listing everything in the loaded recipe YAML ``config``
        that is not allowed; ``folders`` are where relative file paths would be looked up."""
        bases = [Path.cwd(), *(Path(f) for f in folders)]
        self._raise(list(self._problems(config, "", bases)))

    def check_parsed(self, config: Any) -> None:
        """Raise :class:`RecipeRefused` for what jsonargparse resolved from the recipe
        (``class_path`` values, imported classes and functions) outside the allowlist."""
        self._raise(list(self._parsed_problems(config, "")))

    # internals -------------------------------------------------------------------------------
    def _in_scope(self, module: str) -> bool:
        return any(
            module == s or module.startswith(s + ".") or s.startswith(module + ".")
            for s in self.scopes
        )

    def _refusal(self, path: str, where: str) -> str:
        return (
            f"{where or 'the recipe'}: {path!r} is not in the allowlist of classes; to trust it, "
            f"add it to {self.how.format(path=path)}"
        )

    def _problems(self, value: Any, where: str, bases: list[Path]) -> Iterator[str]:
        if isinstance(value, dict):
            for key, item in value.items():
                here = f"{where}.{key}" if where else str(key)
                name = str(key).rsplit(".", 1)[-1]
                if name == "__path__":
                    yield f"{here}: a nested config file is not accepted from outside"
                elif name == "class_path":
                    if not isinstance(item, str) or not _DOTTED.fullmatch(item):
                        yield (
                            f"{here}: {item!r} is not a full import path (package.module.Class);"
                            " send the resolved recipe (omnifm fit --config RECIPE --print_config)"
                        )
                    elif not self.allows(item):
                        yield self._refusal(item, here)
                else:
                    yield from self._problems(item, here, bases)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from self._problems(item, f"{where}[{i}]", bases)
        elif isinstance(value, str):
            yield from self._string_problems(value, where, bases)

    def _string_problems(self, text: str, where: str, bases: list[Path]) -> Iterator[str]:
        stripped = text.strip()
        if "://" in stripped or "::" in stripped:
            yield f"{where}: {text!r} looks like a URL; a recipe from outside cannot fetch more"
        elif _names_a_file(stripped, bases):
            yield (
                f"{where}: {text!r} names a file on this site; a recipe from outside must be "
                "self-contained (send the resolved recipe: omnifm fit --config RECIPE "
                "--print_config), or keep this site's own recipe (--node-config "
                "\"recipe='PATH'\")"
            )
        elif _DOTTED.fullmatch(stripped) and _importable_top(stripped):
            if not self.allows(stripped):
                yield self._refusal(stripped, where)
        else:  # jsonargparse reads a string as YAML: a nested config, or a quoted/commented path
            try:
                inner = yaml.safe_load(stripped)
            except yaml.YAMLError:
                return
            if isinstance(inner, dict | list) or (isinstance(inner, str) and inner != stripped):
                yield from self._problems(inner, f"{where} (YAML in a string)", bases)

    def _parsed_problems(self, value: Any, where: str) -> Iterator[str]:
        items: Iterable[tuple[Any, Any]] = ()
        if isinstance(value, Namespace):
            items = vars(value).items()
        elif isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from self._parsed_problems(item, f"{where}[{i}]")
            return
        elif inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value):
            if not self.allows_object(value):
                yield self._refusal(_name(value), where)
            return
        for key, item in items:
            here = f"{where}.{key}" if where else str(key)
            if key == "__path__":
                yield f"{here}: a nested config file is not accepted from outside"
            elif key == "class_path" and isinstance(item, str):
                if not self.allows(item):
                    yield self._refusal(item, here)
            else:
                yield from self._parsed_problems(item, here)

    def _raise(self, problems: list[str]) -> None:
        if not problems:
            return
        listed = problems[:_MAX_LISTED]
        more = len(problems) - len(listed)
        raise RecipeRefused(
            "the recipe sent with the run is refused here, before anything is built from it:\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else "")
        )


def _import(path: str) -> Any:
    """The object at dotted ``path``, as jsonargparse resolves it (module, then attributes)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(f"no module in {path!r}")


def _name(obj: Any) -> str:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(obj)


def _importable_top(path: str) -> bool:
    """Whether ``path``'s first part is an importable module (found, not imported)."""
    try:
        return importlib.util.find_spec(path.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _names_a_file(text: str, bases: list[Path]) -> bool:
    if not text or "\n" in text or "\0" in text or len(text) > 4096:
        return False
    try:
        path = Path(os.path.expanduser(text))
        candidates = [path] if path.is_absolute() else [b / path for b in bases]
        candidates += [Path(os.path.normpath(c)) for c in candidates]  # ".." in a missing folder
        return any(c.is_file() for c in candidates)
    except (OSError, ValueError):
        return False
