"""A recipe sent with a Flower run names only what the receiving machine allows: every route by
which jsonargparse/LightningCLI imports, calls or reads something is checked before parsing,
and what the parser resolved is checked again before anything is instantiated."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")

from flwr.app import Context, RecordDict
from lightning.pytorch.callbacks import Callback

from omnifm.blocks import OmniFMStack
from omnifm.cli import OmniFMCLI
from omnifm.federated.flower import load_recipe, make_server_app
from omnifm.federated.flower.allowlist import SERVER_ENV, Allowlist, RecipeRefused
from omnifm.federated.flower.clientapp import Site

from ..conftest import REPO_ROOT
from ..tiny_recipes import TINY_STACK, write_recipe

HERE = __name__  # this module's import path, for classes and functions a recipe names
CALLS: list[str] = []  # what this module's tripwires saw instantiated or called


class Tripwire(Callback):
    """A callback that records its instantiation: a recipe names it by its short name."""

    def __init__(self) -> None:
        CALLS.append("Tripwire")


def tripwire_stack(embed_dim: int) -> OmniFMStack:
    """A stack factory that records its call: a recipe names it by a bare import string."""
    CALLS.append(f"tripwire_stack({embed_dim})")
    return OmniFMStack(embed_dim, **TINY_STACK["init_args"])


@pytest.fixture(autouse=True)
def no_calls() -> None:
    CALLS.clear()


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny recipe as the coordinator sends it (resolved, as a run folder's config.yaml)."""
    folder = tmp_path_factory.mktemp("allowlist")
    return OmniFMCLI(["--config", str(write_recipe(folder, "tiny"))], run=False).recipe()


def refusal(config: dict[str, Any], folders: tuple[Path, ...] = ()) -> str:
    with pytest.raises(RecipeRefused) as caught:
        Allowlist().check_recipe(config, folders)
    return str(caught.value)


POPEN = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", "pwned"]}}
ALLOW_POPEN = "--node-config \"allowed-classes='subprocess.Popen'\""


def _set(config: dict[str, Any], where: str, value: Any) -> None:
    *parents, last = where.split(".")
    for key in parents:
        config = config[int(key)] if key.isdigit() else config.setdefault(key, {})
    config[last] = value


# where, what: a class outside the allowlist anywhere the parser would import it
CASES: dict[str, tuple[str, Any, str]] = {
    "optimizer class_path": ("model.init_args.optimizer", POPEN, "optimizer.class_path"),
    "optimizer bare string": ("model.init_args.optimizer", "subprocess.Popen", "optimizer:"),
    "inside optimizer init_args": (
        "model.init_args.optimizer.init_args.betas",
        [0.9, {"class_path": "subprocess.Popen"}],
        "optimizer.init_args.betas[1].class_path",
    ),
    "lr scheduler callable": (
        "model.init_args.lr_scheduler",
        {
            "class_path": "torch.optim.lr_scheduler.LambdaLR",
            "init_args": {"lr_lambda": "os.system"},
        },
        "lr_scheduler.init_args.lr_lambda",
    ),
    "stack factory": ("model.init_args.stack", "subprocess.Popen", "model.init_args.stack"),
    "callback": ("trainer.callbacks", [{"class_path": f"{HERE}.Tripwire"}, POPEN], "callbacks"),
    "logger": (
        "trainer.logger",
        {"class_path": "lightning.pytorch.loggers.MLFlowLogger"},
        "trainer.logger.class_path",
    ),
    "plugins": ("trainer.plugins", [POPEN], "trainer.plugins[0].class_path"),
    "strategy": ("trainer.strategy", POPEN, "trainer.strategy.class_path"),
    "profiler": ("trainer.profiler", "subprocess.Popen", "trainer.profiler"),
    "a client's datamodule": (
        "data.init_args.clients.0.data",
        POPEN,
        "data.init_args.clients[0].data.class_path",
    ),
    "dict value in a list": (
        "data.init_args.clients.1.extra",
        {"nested": ["a", {"deeper": {"class_path": "subprocess.Popen"}}]},
        "clients[1].extra.nested[1].deeper.class_path",
    ),
    "federation strategy": ("federation.strategy", POPEN, "federation.strategy.class_path"),
    "YAML in a string": (
        "model.init_args.optimizer",
        "{class_path: subprocess.Popen, init_args: {args: [touch, pwned]}}",
        "optimizer (YAML in a string).class_path",
    ),
    "a quoted path with a comment": (
        "model.init_args.optimizer",
        "'subprocess.Popen'  # YAML in a string",
        "optimizer (YAML in a string)",
    ),
    "dotted key": ("model.init_args.optimizer", {"init_args.class_path": "subprocess.Popen"}, ""),
    "a re-export through an allowed package": (
        "model.init_args.optimizer.class_path",
        "omnifm.federated.flower.launch.subprocess.Popen",
        "optimizer.class_path",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_class_outside_the_allowlist_is_refused_wherever_it_is(resolved: str, case: str) -> None:
    where, value, location = CASES[case]
    config = yaml.safe_load(resolved)
    _set(config, where, value)
    message = refusal(config)
    assert location in message
    assert "subprocess.Popen" in message or "os.system" in message or "MLFlowLogger" in message
    assert "is not in the allowlist" in message and "--node-config \"allowed-classes='" in message


def test_every_problem_is_listed_with_where_it_is_and_how_to_allow_it(resolved: str) -> None:
    config = yaml.safe_load(resolved)
    config["trainer"]["callbacks"] = [POPEN]
    config["model"]["init_args"]["optimizer"] = "os.system"
    message = refusal(config)
    assert "trainer.callbacks[0].class_path: 'subprocess.Popen' is not in the allowlist" in message
    assert ALLOW_POPEN in message
    assert "model.init_args.optimizer: 'os.system'" in message


def test_short_or_malformed_class_paths_are_refused(resolved: str) -> None:
    config = yaml.safe_load(resolved)
    config["model"]["init_args"]["optimizer"]["class_path"] = "AdamW"
    assert "optimizer.class_path: 'AdamW' is not a full import path" in refusal(config)


def test_nested_config_files_and_urls_are_refused(resolved: str, tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("class_path: omnifm.datamodules.PhantomDataModule\n")
    recipe_folder = tmp_path / "recipe"  # where load_recipe writes the recipe: relative paths
    for value in (str(data), "../data.yaml", "https://example.org/data.yaml", "s3://b/d.yaml"):
        config = yaml.safe_load(resolved)
        config["data"] = value
        message = refusal(config, (recipe_folder,))
        assert f"data: {value!r}" in message
        assert ("names a file on this site" in message) or ("looks like a URL" in message)
    config = yaml.safe_load(resolved)
    config["data"]["__path__"] = str(data)
    assert "data.__path__: a nested config file" in refusal(config)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO_ROOT / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_passes_the_default_allowlist(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the recipes' nested data configs are relative to it
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        OmniFMCLI(["--config", f"recipes/{name}", "--print_config"], run=False)
    config = yaml.safe_load(out.getvalue())  # what `omnifm fit --federation.backend flower` sends
    assert {"model", "data", "trainer", "federation"} <= set(config)
    Allowlist().check_recipe(config)


def test_the_resolved_recipe_loads_and_named_files_are_not_read(resolved: str) -> None:
    recipe = load_recipe(resolved, allowlist=Allowlist())
    assert type(recipe.model).__name__ == "ClassificationTask"
    config = yaml.safe_load(resolved)
    config["data"] = "/etc/passwd"  # would be read (and echoed back in the parser's error)
    with pytest.raises(RecipeRefused, match="'/etc/passwd' names a file on this site"):
        load_recipe(yaml.safe_dump(config), allowlist=Allowlist())


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("trainer.callbacks", ["Tripwire"], "Tripwire"),  # a short class name, resolved
        ("model.init_args.stack", f"{HERE}.tripwire_stack", "tripwire_stack(16)"),  # a bare path
    ],
)
def test_what_the_parser_would_instantiate_or_call_is_refused_first(
    resolved: str, where: str, value: Any, expected: str
) -> None:
    config = yaml.safe_load(resolved)
    _set(config, where, value)
    text = yaml.safe_dump(config)
    with pytest.raises(RecipeRefused, match=f"{where.replace('.', '[.]')}"):
        load_recipe(text, allowlist=Allowlist())
    assert CALLS == []  # refused before anything was built
    # Control: the route is real. Once a site allows them, the parser builds or calls what the
    # recipe names, while building the recipe
    load_recipe(text, allowlist=Allowlist([f"{HERE}.Tripwire", f"{HERE}.tripwire_stack"]))
    calls = list(CALLS)
    assert calls == [expected]


def test_the_allowlist_resolves_what_a_path_names() -> None:
    allowlist = Allowlist()
    for allowed in (
        "omnifm.tasks.ClassificationTask",
        "omnifm.federated.OmniFM",  # re-exported by the library from an allowed module
        "torch.optim.AdamW",
        "torch.optim.adamw.AdamW",
        "torch.optim.lr_scheduler.StepLR",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    ):
        assert allowlist.allows(allowed), allowed
    for refused in (
        "subprocess.Popen",
        "os.system",
        "builtins.eval",
        "torch.load",  # torch, outside torch.optim
        "omnifm.tasks.base.torch.load",  # a module attribute of an allowed module
        "omnifm.federated.flower.local.LocalDeployment",  # the library, outside the list
        "lightning.pytorch.callbacks.ModelCheckpoint",  # writes where the recipe says
        "omnifm.tasks",  # a module, not a class
        "jsonargparse.set_parsing_settings",
        "Popen",
    ):
        assert not allowlist.allows(refused), refused


def test_a_site_extends_the_allowlist() -> None:
    assert Allowlist.from_text(f"{HERE}.Tripwire, subprocess.*").allows("subprocess.Popen")
    assert Allowlist.from_text(f"{HERE}.Tripwire").allows(f"{HERE}.Tripwire")
    assert not Allowlist([], defaults=False).allows("torch.optim.AdamW")
    with pytest.raises(ValueError, match="cannot be imported on this machine"):
        Allowlist(["my_hospital.tasks.Missing"])
    with pytest.raises(ValueError, match="jsonargparse cannot be allowed"):
        Allowlist(["jsonargparse.*"])
    with pytest.raises(ValueError, match="not an import path"):
        Allowlist(["Popen"])


def _context(sent: str, **node: str) -> Context:
    """A node's context in a run whose config carries the recipe ``sent``."""
    return Context(0, 1, dict(node), RecordDict(), {"recipe": sent})


def _malicious(resolved: str, tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "pwned"
    config = yaml.safe_load(resolved)
    popen = copy.deepcopy(POPEN)
    popen["init_args"]["args"] = ["touch", str(marker)]
    config["trainer"]["callbacks"] = [popen]
    return yaml.safe_dump(config), marker


def test_a_site_refuses_a_sent_recipe_but_trusts_its_own(resolved: str, tmp_path: Path) -> None:
    text, marker = _malicious(resolved, tmp_path)
    with pytest.raises(RecipeRefused, match="trainer.callbacks.0..class_path: 'subprocess.Popen'"):
        Site(_context(text, client="ct"))
    assert not marker.exists()
    own = tmp_path / "own.yaml"  # the site's own recipe: trusted, never checked
    own.write_text(resolved)
    assert Site(_context(text, client="ct", recipe=str(own))).name == "ct"
    # a site that trusts a class names it in its node config
    sent = yaml.safe_load(resolved)
    sent["trainer"]["callbacks"] = ["Tripwire"]
    site = Site(_context(yaml.safe_dump(sent), client="mri", **{"allowed-classes": f"{HERE}.*"}))
    assert site.name == "mri" and "Tripwire" in CALLS


def test_the_server_refuses_a_sent_recipe_too(
    resolved: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, marker = _malicious(resolved, tmp_path)
    main: Callable[..., None] = make_server_app()
    monkeypatch.delenv(SERVER_ENV, raising=False)
    with pytest.raises(RecipeRefused, match=f"{SERVER_ENV}='subprocess.Popen'"):
        main(None, _context(text))  # refused before the grid is used
    assert not marker.exists()
