"""The ``omnifm`` command: ``omnifm fit|validate|test --config RECIPE`` (LightningCLI)."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from omnifm.blocks.stack import OmniFMStack, check_stack_args
from omnifm.federated import Federation, FederationConfig, Strategy
from omnifm.federated.checkpoint import (
    CheckpointMismatch,
    recipe_differences,
    resolve_checkpoint,
    shorten,
)
from omnifm.tasks import OmniFMTask

__all__ = ["OmniFMCLI", "OmniFMParser", "main"]

log = logging.getLogger("omnifm")

TRAINER_DEFAULTS = {
    "max_epochs": 1,  # local epochs per round
    "accelerator": "auto",  # CUDA when present
    "devices": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "log_every_n_steps": 1,
}
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


class OmniFMCLI(LightningCLI):
    """LightningCLI whose ``fit``/``validate``/``test`` run a federation.

    Sections: ``model`` (an ``OmniFMTask``), ``data`` (a federated datamodule), ``trainer``
    (settings of each client's local Trainer, built fresh every round) and ``federation``
    (rounds, participation, strategy, bank, seed, output folder).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            OmniFMTask,
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
        for attr in ("num_classes", "in_channels", "task_type", "questions"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        problem = recipe_problem(self._config())
        if problem:
            self.error(problem)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # a constructor's check: its message, not a parser dump
            self.error(str(_root_cause(err)))

    def error(self, message: str) -> NoReturn:
        """Stop with ``message`` as the command's one error (exit status 2)."""
        self._parser(self.subcommand).error(message)

    def _config(self) -> Namespace:
        sub = self.subcommand
        return self.config[sub] if sub else self.config

    def federation(self) -> Federation:
        sub = self.subcommand
        config = self.config_init[sub] if sub else self.config_init
        if config["federation"].backend == "flower" and sub != "fit":
            raise ValueError(
                f"`omnifm {sub}` runs in process; a Flower run's personal states stay on the "
                "sites. Drop --federation.backend flower (its last test is in results.csv)"
            )
        trainer = {k: v for k, v in dict(config["trainer"]).items() if k != "logger"}
        return Federation(self.model, self.datamodule, config["federation"], trainer, self.recipe())

    def recipe(self) -> str:
        """This command's resolved recipe as YAML (a run folder's ``config.yaml``)."""
        return self._parser(self.subcommand).dump(self._config(), skip_none=False)

    def _run(self, stage: str, ckpt_path: str | None) -> list[dict[str, Any]]:
        """``stage`` of the in-process federation; a checkpoint that does not fit the recipe
        is refused with the settings that differ from its run's ``config.yaml``."""
        federation = self.federation()
        saved, differences = self._differences(federation, ckpt_path)
        if differences:
            log.warning(
                "the recipe differs from the checkpoint's run (%s): %s",
                saved,
                "; ".join(differences),
            )
        try:
            return getattr(federation, stage)(ckpt_path)
        except CheckpointMismatch as err:
            why = (
                f"these settings differ from the run's {saved}: {shorten(differences, 8)}"
                if differences
                else f"no setting differs from the run's {saved or 'config.yaml (none found)'}"
            )
            self.error(
                f"--ckpt_path {ckpt_path} does not fit this recipe; {why}. In detail, {err}. "
                f"Resume with the run's own recipe (omnifm {stage} --config "
                f"{saved or 'RUN/config.yaml'} --ckpt_path {ckpt_path}), or start a new run "
                "without --ckpt_path"
            )

    def _differences(
        self, federation: Federation, ckpt_path: str | None
    ) -> tuple[Path | None, list[str]]:
        """The checkpoint's ``config.yaml`` and the settings this recipe changes in it."""
        if ckpt_path is None:
            return None, []
        cfg = federation.config
        try:
            path = resolve_checkpoint(ckpt_path, Path(cfg.output), cfg.name)
        except FileNotFoundError:
            return None, []  # the federation reports it
        saved = path.parent.parent / "config.yaml"
        if not saved.is_file():
            return None, []
        ignore = ("ckpt_path", "verbose", "weights_only")  # the command's, not the recipe's
        return saved, recipe_differences(saved.read_text(), self.recipe(), ignore)

    def fit(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        federation = self.config_init["fit"]["federation"]
        if federation.backend == "flower":  # the same recipe on Flower (omnifm[flower])
            from omnifm.federated.flower import run_flower

            names = self.datamodule.client_names()
            self.results = run_flower(self.recipe(), federation, len(names), ckpt_path)
            return
        self.results = self._run("fit", ckpt_path)

    def validate(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        self.results = self._run("validate", ckpt_path)

    def test(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        self.results = self._run("test", ckpt_path)


def main(args: list[str] | None = None) -> None:
    """Run the LightningCLI (``omnifm fit|validate|test``); the console script is
    ``omnifm.__main__.main``, which also knows ``omnifm report``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OmniFMCLI(args)


if __name__ == "__main__":
    main()
