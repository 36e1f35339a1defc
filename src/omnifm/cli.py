"""The ``omnifm`` command: ``omnifm fit|validate|test --config RECIPE`` (LightningCLI)."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from omnifm.federated import Federation, FederationConfig
from omnifm.tasks import OmniFMTask

__all__ = ["OmniFMCLI", "main"]

TRAINER_DEFAULTS = {
    "max_epochs": 1,  # local epochs per round
    "accelerator": "auto",  # CUDA when present
    "devices": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "log_every_n_steps": 1,
}


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
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(FederationConfig, "federation")
        for attr in ("num_classes", "in_channels", "task_type", "questions"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")

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
        sub = self.subcommand
        return self._parser(sub).dump(self.config[sub] if sub else self.config, skip_none=False)

    def fit(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        federation = self.config_init["fit"]["federation"]
        if federation.backend == "flower":  # the same recipe on Flower (omnifm[flower])
            from omnifm.federated.flower import run_flower

            names = self.datamodule.client_names()
            self.results = run_flower(self.recipe(), federation, len(names), ckpt_path)
            return
        self.results = self.federation().fit(ckpt_path)

    def validate(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        self.results = self.federation().validate(ckpt_path)

    def test(
        self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **_: Any
    ) -> None:
        self.results = self.federation().test(ckpt_path)


def main(args: list[str] | None = None) -> None:
    """Run the LightningCLI (``omnifm fit|validate|test``); the console script is
    ``omnifm.__main__.main``, which also knows ``omnifm report``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OmniFMCLI(args)


if __name__ == "__main__":
    main()
