"""The ``omnifm`` command: ``omnifm fit|validate|test --config RECIPE`` (LightningCLI)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omnifm.federated import Federation
from omnifm.federated.checkpoint import (
    CheckpointMismatch,
    recipe_differences,
    resolve_checkpoint,
    shorten,
)
from omnifm.recipe import OmniFMParser, RecipeCLI

__all__ = ["OmniFMCLI", "OmniFMParser", "main"]

log = logging.getLogger("omnifm")


class OmniFMCLI(RecipeCLI):
    """LightningCLI whose ``fit``/``validate``/``test`` run a federation of what the recipe
    builds (``omnifm.recipe.RecipeCLI``): in process, or on Flower for ``fit`` with
    ``federation.backend: flower``.
    """

    def federation(self) -> Federation:
        sub = self.subcommand
        config = self.config_init[sub] if sub else self.config_init
        if config["federation"].backend == "flower" and sub != "fit":
            raise ValueError(
                f"`omnifm {sub}` runs in process; a Flower run's personal states stay on the "
                "sites. Drop --federation.backend flower (its last test is in results.csv)"
            )
        recipe = self.built()
        return Federation(
            recipe.model, recipe.datamodule, recipe.config, recipe.trainer, recipe.text
        )

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
