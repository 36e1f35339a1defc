"""A recipe into objects: the parser of ``omnifm`` recipes, its checks, and the model,
datamodule, trainer settings and federation settings it builds.

CLI-free: ``omnifm.cli`` runs a federation on what this builds, and a Flower node
(``omnifm.federated.flower.recipe``) builds the same objects from the recipe it is sent.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from omnifm.blocks.stack import OmniFMStack, check_stack_args
from omnifm.datamodules.multitask import LINKED, MultiTaskDataModule
from omnifm.federated.config import FederationConfig
from omnifm.federated.strategies import Strategy
from omnifm.federated.trainer import TRAINER_DEFAULTS
from omnifm.tasks import MultiTask, OmniFMTask

__all__ = [
    "OmniFMParser",
    "Recipe",
    "RecipeCLI",
    "RecipeCheck",
    "load_recipe",
    "recipe_problem",
    "strategy_names",
]

# keys of the `fit` subcommand (Trainer.fit's arguments) that the plain parser does not take
_SUBCOMMAND_ONLY = set(inspect.signature(Trainer.fit).parameters) - {"self", "model"}

STACK_KEYS = "model.init_args.stack.init_args"


def strategy_names() -> list[str]:
    """Names ``federation.strategy`` accepts without a class path: the imported strategies."""
    found, todo = set(), [Strategy]
    while todo:
        for cls in todo.pop().__subclasses__():
            lazy = any(b.__module__.startswith("jsonargparse") for b in cls.__mro__)
            if not lazy:  # a lazy_instance default is a copy, not a strategy
                found.add(cls.__name__)
            todo.append(cls)
    return sorted(n for n in found if not n.startswith("_"))


def _explain(message: str) -> str:
    """A parser message in a few words; an unknown strategy gets the valid names."""
    key = 'Parser key "federation.strategy":'
    if not message.startswith(key):
        return message
    detail = " ".join(message[len(key) :].split())
    unknown = "Expected a dot import path string: "
    given = detail.removeprefix(unknown)
    if detail.startswith(unknown):
        detail = f"unknown strategy {given!r}"
    names = strategy_names()
    close = difflib.get_close_matches(given, names, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (
        f"federation.strategy: {detail}. Valid names: {', '.join(names)}; or the import path "
        f"of a Strategy subclass (e.g. my_package.MyStrategy).{hint}"
    )


class OmniFMParser(LightningArgumentParser):
    """Reports a bad recipe in one short message (what, where, how to fix), without the
    usage text of every option."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        message = _explain(message)
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {message}\n(`{prog} --help` lists every option)\n")
        self.exit(2)


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def recipe_problem(config: Namespace) -> str | None:
    """The first setting of a parsed recipe that cannot build, or that silently switches the
    method off, in the recipe's own key names; ``None`` when there is none."""
    model = config.get("model") or Namespace()
    args = model.get("init_args") or Namespace()
    stack = args.get("stack")
    cls = _import(str(stack.get("class_path", ""))) if isinstance(stack, Namespace) else None
    if not (isinstance(cls, type) and issubclass(cls, OmniFMStack)):
        return None
    s = stack.get("init_args") or Namespace()
    gskr = bool(s.get("gskr", True))
    names = {"dim": "model.init_args.embed_dim"}
    try:
        check_stack_args(
            int(args.get("embed_dim", 256)),
            int(s.get("num_heads", 4)),
            int(s.get("top_k", 8)),
            gskr,
            lambda arg: names.get(arg, f"{STACK_KEYS}.{arg}"),
        )
    except ValueError as err:
        return str(err)
    bank = (config.get("federation") or Namespace()).get("bank")
    if gskr and bank is not None and getattr(bank, "prototypes_per_client", 1) == 0:
        return (
            "federation.bank.prototypes_per_client=0 leaves the spectral bank empty: GSKR "
            "retrieval and SPAlign would be silently off in a run still called OmniFM. Set "
            f"it >= 1 (8 in the recipes), or switch retrieval off with {STACK_KEYS}.gskr=false"
        )
    return None


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _subclass(path: Any, base: type) -> bool:
    cls = _import(str(path or ""))
    return isinstance(cls, type) and issubclass(cls, base)


def link_tasks(config: Namespace) -> Namespace | None:
    """Many tasks: a copy of ``config`` whose tasks take from their own data what the CLI
    links for one task (``num_classes``, ``in_channels``, ``task_type``, ``questions``);
    ``None`` for a single-task recipe. Each task's datamodule is built once here to read them,
    as LightningCLI's links read the one datamodule it builds."""
    model = config.get("model") or Namespace()
    if not _subclass(model.get("class_path"), MultiTask):
        return None
    data = config.get("data") or Namespace()
    if not _subclass(data.get("class_path"), MultiTaskDataModule):
        raise ValueError(
            "model omnifm.tasks.MultiTask needs data omnifm.datamodules.MultiTaskDataModule "
            "with the same task names"
        )
    config = config.clone()
    tasks, datas = config.model.init_args.tasks, config.data.init_args.tasks
    if set(tasks) != set(datas):
        raise ValueError(
            f"model.init_args.tasks {sorted(tasks)} and data.init_args.tasks {sorted(datas)} "
            "must name the same tasks"
        )
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    for name, spec in tasks.items():
        built = parser.instantiate(Namespace(data=datas[name])).data
        accepts = inspect.signature(_import(spec.class_path)).parameters
        for attr in LINKED:
            if attr in accepts and hasattr(built, attr):
                spec.init_args[attr] = getattr(built, attr)
    return config


class RecipeCLI(LightningCLI):
    """Parses and builds a recipe: sections ``model`` (an ``OmniFMTask``), ``data`` (a
    federated datamodule), ``trainer`` (settings of each client's local Trainer, built fresh
    every round) and ``federation`` (rounds, participation, strategy, bank, seed, output).

    A bad recipe stops with one short error naming the setting and how to fix it.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LightningModule,  # an OmniFMTask, or a MultiTask of them (checked when built)
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_class=OmniFMParser,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(FederationConfig, "federation")
        for attr in LINKED:
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        problem = recipe_problem(self._config())
        if problem:
            self.error(problem)

    def instantiate_classes(self) -> None:
        sub = self.subcommand
        parsed = self._config()
        try:
            linked = link_tasks(parsed)
            if linked is not None:  # instantiate from it; the recipe stays as written
                if sub:
                    self.config[sub] = linked
                else:
                    self.config = linked
            super().instantiate_classes()
        except ValueError as err:  # a constructor's check: its message, not a parser dump
            self.error(str(_root_cause(err)))
        finally:
            if sub:
                self.config[sub] = parsed
            else:
                self.config = parsed

    def error(self, message: str) -> NoReturn:
        """Stop with ``message`` as the command's one error (exit status 2)."""
        self._parser(self.subcommand).error(message)

    def _config(self) -> Namespace:
        sub = self.subcommand
        return self.config[sub] if sub else self.config

    def recipe(self) -> str:
        """This command's resolved recipe as YAML (a run folder's ``config.yaml``)."""
        return self._parser(self.subcommand).dump(self._config(), skip_none=False)

    def built(self) -> Recipe:
        """What the recipe built (after instantiation)."""
        if not isinstance(self.model, OmniFMTask | MultiTask):
            self.error(
                f"model is a {type(self.model).__name__}; omnifm trains an OmniFMTask "
                "(omnifm.tasks.ClassificationTask, ...) or a MultiTask of them"
            )
        sub = self.subcommand
        config = self.config_init[sub] if sub else self.config_init
        trainer = {k: v for k, v in dict(config["trainer"]).items() if k != "logger"}
        return Recipe(self.model, self.datamodule, config["federation"], trainer, self.recipe())


@dataclass
class Recipe:
    """A recipe's model, federated datamodule, federation settings and trainer settings, and
    its resolved text (a run folder's ``config.yaml``)."""

    model: OmniFMTask
    datamodule: Any
    config: FederationConfig
    trainer: dict[str, Any]
    text: str


class RecipeCheck(Protocol):
    """Checks of a recipe from outside (a Flower node's allowlist): on the raw YAML before
    anything is parsed, and on the parsed values before anything is instantiated."""

    def check_recipe(self, config: dict[str, Any], folders: Sequence[str]) -> None: ...

    def check_parsed(self, config: Namespace) -> None: ...


def load_recipe(
    text: str, overrides: Sequence[str] = (), allowlist: RecipeCheck | None = None
) -> Recipe:
    """Instantiate a resolved recipe (``omnifm fit ... --print_config``, or the ``config.yaml``
    of a run folder) exactly as ``omnifm fit`` does, seed included, so that every process of a
    federation builds the same initial weights. ``overrides`` are command-line style
    (``--data.init_args.root=/data``). A recipe from outside is checked against ``allowlist``
    before it is parsed, and what the parser resolved before anything is instantiated (a Flower
    node's :class:`~omnifm.federated.flower.allowlist.Allowlist` raises ``RecipeRefused`` if
    it names anything else)."""

    class CheckedCLI(RecipeCLI):
        def before_instantiate_classes(self) -> None:
            if allowlist is not None:  # first: before any other hook looks at the values
                allowlist.check_parsed(self.config)
            super().before_instantiate_classes()

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"the recipe is not valid YAML: {err}") from err
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise ValueError(
            "the recipe has no model and data sections; send the resolved "
            "recipe (omnifm fit --config RECIPE --print_config)"
        )
    for key in _SUBCOMMAND_ONLY:
        config.pop(key, None)
    folder = tempfile.mkdtemp(prefix="omnifm-recipe-")  # nested paths resolve from here
    try:
        if allowlist is not None:  # before the parser reads or imports anything
            allowlist.check_recipe(config, [folder])
        path = f"{folder}/recipe.yaml"
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        with warnings.catch_warnings():  # a node's own argv (Ray's, Flower's) is not ours
            warnings.filterwarnings("ignore", ".*args parameter is intended to run.*")
            cli = CheckedCLI(["--config", path, *overrides], run=False)
    except SystemExit as err:  # the parser printed what is wrong; a node must not just exit
        raise ValueError(f"the recipe does not parse (exit {err.code})") from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dataclasses.replace(cli.built(), text=text)
