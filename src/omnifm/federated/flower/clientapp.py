"""The site side on Flower: a ``ClientApp`` that runs our ``Client`` on its own data.

Each SuperNode plays one client of the recipe's scenario: ``--node-config "client='ct'"``
names it (in a simulation, the node's ``partition-id`` picks the client in order), and
``data-root`` points the recipe's ``data.init_args.root`` at this site's own files. The
recipe comes from the site's own copy (node config ``recipe``, a path), or with the run (run
config ``recipe``): then it may only name the classes of the site's allowlist (the library's
own, extended by node config ``allowed-classes``), checked before anything is built from it;
a refused recipe fails the message, with the reason, back to the server. The client's
personal state and its strategy's client state (SCAFFOLD's control variate, Ditto's model)
stay in ``context.state``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from lightning.pytorch import Trainer
from torch import Tensor

from omnifm.federated.client import Client
from omnifm.federated.dpsgd import private_model
from omnifm.federated.flower.allowlist import NODE_CONFIG_KEY, Allowlist
from omnifm.federated.flower.records import (
    CONFIG,
    UPLOAD,
    WEIGHTS,
    bank_from_records,
    evaluate_res_to_records,
    fit_ins_from_records,
    fit_res_to_records,
    secure_fit_res_to_records,
    tensors,
)
from omnifm.federated.flower.secure import optional_secaggplus
from omnifm.federated.layout import Layout, client_tasks
from omnifm.federated.trainer import client_seed, local_trainer, quiet_lightning, trainer_device
from omnifm.recipe import Recipe, load_recipe

__all__ = ["Site", "client_app", "make_client_app"]

PERSONAL, STRATEGY, STATE = "omnifm.personal", "omnifm.strategy", "omnifm.client"
# one model instance per process, with its layout (the model is reused)
_RECIPES: dict[tuple[str, ...], tuple[Recipe, Layout]] = {}


class Site:
    """This node's client: the recipe's model (shared by the sites of one process), the
    client's data, and its trainer settings."""

    def __init__(self, context: Context, recipe_text: str | None = None) -> None:
        text, sent = (recipe_text, False) if recipe_text else _recipe_text(context)
        node = context.node_config
        overrides = (f"--data.init_args.root={node['data-root']}",) if "data-root" in node else ()
        # a recipe sent with the run names only what this site allows (its own is trusted)
        allowlist = Allowlist.from_text(node.get(NODE_CONFIG_KEY)) if sent else None
        key = (
            hashlib.sha256(text.encode()).hexdigest(),
            *overrides,
            *(allowlist.entries if allowlist else ()),
        )
        if key not in _RECIPES:
            recipe = load_recipe(text, overrides, allowlist)
            dm = recipe.datamodule
            tasks = client_tasks(recipe.model, dm) or dm.client_names()
            model = recipe.model
            if recipe.config.dp_sgd is not None:  # the architecture the server built too
                model = private_model(model)
            _RECIPES[key] = recipe, Layout(model, recipe.config.strategy, tasks)
        recipe, self.layout = _RECIPES[key]
        self.recipe = recipe
        self.name = _client_name(context, recipe.datamodule.client_names())
        self.task = self.layout.task(self.name)
        self.model = self.layout.model(self.name)  # its task's
        self.client = Client(
            self.name,
            recipe.datamodule.modality(self.name),
            recipe.datamodule.site_datamodule(self.name),
            self.layout.initial_personal(self.task),
            recipe.config.bank.privacy,  # the site's recipe: its own uploads' noise
            recipe.config.dp_sgd,  # and its own training's
        )
        if PERSONAL in context.state.array_records:
            self.client.personal = tensors(context.state.array_records[PERSONAL])
        if STRATEGY in context.state.array_records:
            self.client.strategy_state = tensors(context.state.array_records[STRATEGY])
        if STATE in context.state.config_records:
            self.client.steps = int(context.state.config_records[STATE]["steps"])
        self.root = str(Path(tempfile.gettempdir()) / "omnifm-flower" / self.name)

    def local(self, shared: dict[str, Tensor]) -> dict[str, Tensor]:
        """The server's shared state (or broadcast) as this site's task names it."""
        return self.layout.local(self.task, shared)

    def make_trainer(self, **overrides: object) -> Trainer:
        """A local Trainer that writes only under this site's temporary folder."""
        overrides = {"default_root_dir": self.root, **overrides}
        return local_trainer(self.recipe.trainer, self.root, **overrides)

    def save(self, context: Context) -> None:
        """The personal state, the strategy's client state and the step count back into
        ``context.state``."""
        if self.client.personal is not None:
            context.state[PERSONAL] = ArrayRecord(self.client.personal)
        if self.client.strategy_state:
            context.state[STRATEGY] = ArrayRecord(self.client.strategy_state)
        context.state[STATE] = ConfigRecord({"steps": self.client.steps})


def make_client_app(recipe_text: str | None = None) -> ClientApp:
    """A ClientApp for the recipe ``recipe_text`` (None: the recipe sent with the run)."""
    app = ClientApp(mods=[optional_secaggplus])  # Flower's SecAgg+ in secure rounds

    @app.query()
    def hello(msg: Message, context: Context) -> Message:
        """Who this node is; with weights, also its warm-up spectral prototypes."""
        with quiet_lightning():
            site = Site(context, recipe_text)
            config = msg.content.config_records[CONFIG]
            reply = {"client": site.name, "modality": site.client.modality}
            content = RecordDict({CONFIG: ConfigRecord(reply)})
            k = int(config.get("prototypes", 0))
            if k and WEIGHTS in msg.content.array_records:
                try:  # as in process: a failed warm-up leaves the client out of the bank only
                    content[UPLOAD] = ArrayRecord({"prototypes": _warmup(site, msg, k)})
                except Exception as err:
                    reply["warmup_error"] = f"{type(err).__name__}: {err}"
                    content[CONFIG] = ConfigRecord(reply)
        return Message(content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        with quiet_lightning():
            site = Site(context, recipe_text)
            ins, addressed = fit_ins_from_records(msg.content)
            _check_addressee(site, addressed)
            ins = dataclasses.replace(
                ins, weights=site.local(ins.weights), strategy=site.local(ins.strategy)
            )
            res = site.client.fit(
                site.model, ins, site.recipe.config.strategy, site.make_trainer, False
            )
            site.save(context)
            config = msg.content.config_records[CONFIG]
            if config.get("secure"):  # secaggplus_mod masks the update
                content = secure_fit_res_to_records(
                    res,
                    ins.weights,
                    site.client.steps,
                    float(config["max_weight"]),
                    float(config["clipping_range"]),
                )
                return Message(content, reply_to=msg)
        return Message(fit_res_to_records(res, site.client.steps), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        with quiet_lightning():
            site = Site(context, recipe_text)
            config = msg.content.config_records[CONFIG]
            _check_addressee(site, str(config["client"]))
            shared = site.local(tensors(msg.content.array_records[WEIGHTS]))
            bank = bank_from_records(msg.content, config)
            stage = str(config["stage"])
            if stage not in ("validate", "test"):
                raise ValueError(f"unknown evaluation stage {stage!r}")
            res = site.client.evaluate(
                site.model, shared, bank, site.make_trainer, stage, site.recipe.config.strategy
            )
        return Message(evaluate_res_to_records(res), reply_to=msg)

    return app


def _warmup(site: Site, msg: Message, k: int) -> Tensor:
    """Spectral prototypes of the initial model (shared weights sent, personal state here)."""
    config = msg.content.config_records[CONFIG]
    site.client.load(site.model, site.local(tensors(msg.content.array_records[WEIGHTS])))
    site.model.to(trainer_device(site.recipe.trainer))
    try:
        return site.client.prototypes(site.model, k, client_seed(int(config["seed"]), 0, site.name))
    finally:
        site.model.cpu()


def _recipe_text(context: Context) -> tuple[str, bool]:
    """The recipe's text, and whether it came with the run (from outside this site)."""
    if "recipe" in context.node_config:  # the site's own copy
        path = Path(str(context.node_config["recipe"]))
        if not path.is_file():
            raise FileNotFoundError(f"node config recipe={path} is not a file on this site")
        return path.read_text(), False
    text = context.run_config.get("recipe")
    if not text:
        raise ValueError(
            "no recipe: start the run with `omnifm fit --config RECIPE --federation.backend "
            "flower`, which sends it, or give this SuperNode --node-config \"recipe='PATH'\""
        )
    return str(text), True


def _client_name(context: Context, names: list[str]) -> str:
    node = context.node_config
    if "client" in node:
        name = str(node["client"])
        if name not in names:
            raise ValueError(
                f"node config client={name!r} is not a client of the recipe; its clients are "
                f"{names}"
            )
        return name
    if "partition-id" in node:  # a simulated node
        return names[int(node["partition-id"]) % len(names)]
    raise ValueError(
        f"this SuperNode does not say which client it is: start it with "
        f"--node-config \"client='NAME'\" (one of {names})"
    )


def _check_addressee(site: Site, addressed: str) -> None:
    if addressed != site.name:
        raise ValueError(f"message for client {addressed!r} reached client {site.name!r}")


client_app = make_client_app()
