"""A recipe as it travels to a Flower node: resolved YAML text, loaded into its parts there."""

from __future__ import annotations

import inspect
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from lightning.pytorch import Trainer

from omnifm.federated.config import FederationConfig
from omnifm.federated.flower.allowlist import Allowlist
from omnifm.tasks.base import OmniFMTask

__all__ = ["Recipe", "load_recipe"]

# keys of the `fit` subcommand (Trainer.fit's arguments) that the plain parser does not take
_SUBCOMMAND_ONLY = set(inspect.signature(Trainer.fit).parameters) - {"self", "model"}


@dataclass
class Recipe:
    """A recipe's model, federated datamodule, federation settings and trainer settings."""

    model: OmniFMTask
    datamodule: Any
    config: FederationConfig
    trainer: dict[str, Any]
    text: str


def load_recipe(
    text: str, overrides: Sequence[str] = (), allowlist: Allowlist | None = None
) -> Recipe:
    """Instantiate a resolved recipe (``omnifm fit ... --print_config``, or the ``config.yaml``
    of a run folder) exactly as ``omnifm fit`` does, seed included, so that every process of a
    federation builds the same initial weights. ``overrides`` are command-line style
    (``--data.init_args.root=/data``). A recipe from outside is checked against ``allowlist``
    before it is parsed, and what the parser resolved before anything is instantiated; it
    raises :class:`~omnifm.federated.flower.allowlist.RecipeRefused` if it names anything else."""
    from omnifm.cli import OmniFMCLI  # the CLI imports this package's parent

    class CheckedCLI(OmniFMCLI):
        def before_instantiate_classes(self) -> None:
            if allowlist is not None:  # first: before any other hook looks at the values
                allowlist.check_parsed(self.config)
            super().before_instantiate_classes()

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"the recipe sent to this node is not valid YAML: {err}") from err
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise ValueError(
            "the recipe sent to this node has no model and data sections; send the resolved "
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
        raise ValueError(f"the recipe sent to this node does not parse (exit {err.code})") from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    trainer = {k: v for k, v in dict(cli.config_init["trainer"]).items() if k != "logger"}
    return Recipe(cli.model, cli.datamodule, cli.config_init["federation"], trainer, text)
