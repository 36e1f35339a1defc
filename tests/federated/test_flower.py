"""The federation on Flower: a real deployment on loopback (a SuperLink and two SuperNodes as
separate processes) against the in-process engine, a SuperNode killed mid-round, SuperNodes
refusing a sent recipe that names a class outside their allowlist, and
``--federation.backend flower`` (Flower's simulation) through the CLI.

Equality: the Flower run and the in-process run end with the same shared weights and bank,
bit for bit, when torch uses the same number of threads in every process (here 1: the
SuperNodes' processes get OMP_NUM_THREADS=1, the in-process run ``torch.set_num_threads(1)``).
With different thread counts, convolutions sum in another order and AdamW turns those last-bit
differences of near-zero gradients into steps of up to the learning rate (1e-3 seen).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
import torch
import yaml

pytest.importorskip("flwr", reason="Flower is not installed: pip install 'omnifm[flower]'")

from omnifm.cli import OmniFMCLI
from omnifm.federated.checkpoint import load_checkpoint
from omnifm.federated.flower import LocalDeployment, write_app
from omnifm.federated.flower.local import BIN

from ..tiny_recipes import tiny_multitask, write_recipe

LINK = "omnifm-test"
BANK_KEYS = ("vectors", "ids", "modality", "hits", "counts", "owners", "modalities")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """A SuperLink and SuperNodes for clients ct and mri; their ClientApps run 1 thread."""
    folder = tmp_path_factory.mktemp("flower")
    with LocalDeployment(folder, ["ct", "mri"], LINK, {"OMP_NUM_THREADS": "1"}) as link:
        yield link


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(recipe: Path, output: Path, *args: str) -> list[dict]:
    """``omnifm fit`` without validation between rounds: fewer messages, same weights."""
    config = ["--config", str(recipe), f"--federation.output={output}", "--federation.eval_every=9"]
    return OmniFMCLI(["fit", *config, *args]).results


def last_state(output: Path, name: str) -> dict:
    return load_checkpoint(output / name / "version_0" / "checkpoints" / "last.pt")


def both_backends(recipe: Path, name: str) -> tuple[list[dict], list[dict], dict, dict]:
    """``recipe`` in process (one torch thread) and on Flower's simulation: their test rows
    and final checkpoints (Flower's first)."""
    with torch_threads(1):
        inprocess = fit(recipe, recipe.parent / "inprocess")
    flower = fit(recipe, recipe.parent / "flower", "--federation.backend=flower")
    states = [last_state(recipe.parent / where, name) for where in ("flower", "inprocess")]
    return flower, inprocess, *states


def assert_same_server_state(flower: dict, inprocess: dict) -> None:
    assert flower["round"] == inprocess["round"] == 2
    shared, reference = flower["server"]["shared"], inprocess["server"]["shared"]
    assert list(shared) == list(reference)
    for key, value in reference.items():
        assert torch.equal(shared[key], value), key
    bank, reference_bank = flower["server"]["bank"], inprocess["server"]["bank"]
    assert len(reference_bank["vectors"]) > 0
    for key in BANK_KEYS:
        a, b = bank[key], reference_bank[key]
        assert torch.equal(a, b) if torch.is_tensor(b) else a == b, key
    assert flower["server"]["sampler"]["history"] == inprocess["server"]["sampler"]["history"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict]:
    """The tiny recipe (two phantom sites, 2 rounds, seed 0), its in-process test rows and
    final state, with one torch thread."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder, "tiny")
    with torch_threads(1):
        rows = fit(recipe, folder / "inprocess")
    return recipe, rows, last_state(folder / "inprocess", "tiny")


def test_simulation_through_the_cli_matches_in_process(reference, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Flower's simulation needs Ray: pip install 'omnifm[flower]'")
    recipe, reference_rows, reference_state = reference
    # a simulated client is a Ray actor with 1 CPU, whose torch runs 1 thread
    rows = fit(recipe, tmp_path, "--federation.backend=flower")
    assert [r["client"] for r in rows] == ["ct", "mri", "mean"]
    assert_same_server_state(last_state(tmp_path, "tiny"), reference_state)
    for got, want in zip(rows, reference_rows, strict=True):
        assert got["test/acc"] == pytest.approx(want["test/acc"])


@pytest.mark.parametrize("strategy", ["SCAFFOLD", "Ditto"])
def test_simulation_of_a_strategy_with_client_state_matches_in_process(
    strategy: str, tmp_path: Path
) -> None:
    """SCAFFOLD's control variates and Ditto's personal models live in the ClientApps'
    context state; the run ends where the in-process one (client store) does."""
    pytest.importorskip("ray", reason="Flower's simulation needs Ray: pip install 'omnifm[flower]'")
    recipe = write_recipe(tmp_path, "tiny", strategy=strategy)
    rows, want, flower, inprocess = both_backends(recipe, "tiny")
    assert_same_server_state(flower, inprocess)
    for key, value in inprocess["server"]["strategy"].get("c", {}).items():  # SCAFFOLD's c
        assert value.abs().sum() > 0 and torch.equal(flower["server"]["strategy"]["c"][key], value)
    # Ditto: every site is tested with its own model, as in process
    assert [r["test/acc"] for r in rows] == pytest.approx([r["test/acc"] for r in want])


def test_simulation_of_a_two_task_federation_matches_in_process(tmp_path: Path) -> None:
    """Each simulated site builds its own task's model and takes its task's part of the
    shared state; the run ends where the in-process one does, every scope included."""
    pytest.importorskip("ray", reason="Flower's simulation needs Ray: pip install 'omnifm[flower]'")
    model, data = tiny_multitask()
    recipe = write_recipe(tmp_path, "tasks", model=model, data=data, strategy="FedAdam")
    rows, want, flower, inprocess = both_backends(recipe, "tasks")
    assert_same_server_state(flower, inprocess)
    assert any(k.startswith("organs/") for k in flower["server"]["shared"])
    moments = inprocess["server"]["strategy"]["scopes"]["organs"]["m"]
    for key, value in moments.items():  # FedAdam's moments of the segmentation task's scope
        assert torch.equal(flower["server"]["strategy"]["scopes"]["organs"]["m"][key], value)
    assert [r["client"] for r in rows] == [r["client"] for r in want]
    assert [r.get("test/dice") for r in rows] == pytest.approx([r.get("test/dice") for r in want])


@pytest.mark.slow
def test_deployment_ends_where_the_in_process_engine_ends(
    reference, deployment: LocalDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, _, reference_state = reference
    monkeypatch.setenv("FLWR_HOME", str(deployment.home))
    # submitted to the SuperLink (flwr run), trained on the two SuperNodes
    link = f"--federation.flower.superlink={LINK}"
    rows = fit(recipe, tmp_path, "--federation.backend=flower", link)
    assert rows == []  # a deployment's results stay in the run folder on the SuperLink side
    state = last_state(tmp_path, "tiny")
    assert_same_server_state(state, reference_state)
    assert "clients" not in state  # personal states never left the sites
    results = (tmp_path / "tiny" / "version_0" / "results.csv").read_text()
    assert results.startswith("client,modality") and "\nmean," in results


@pytest.mark.slow
def test_a_supernode_refuses_a_sent_recipe_naming_a_class_outside_its_allowlist(
    deployment: LocalDeployment, tmp_path: Path
) -> None:
    """A compromised coordinator: its own ServerApp (here ours, building a harmless recipe of
    its own) with a run config whose recipe would start a process on every site."""
    # Prepare: the harmless recipe on the server, the malicious one in the run config
    marker = tmp_path / "pwned"
    popen = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}}
    benign = yaml.safe_load(write_recipe(tmp_path, "refused", rounds=1).read_text())
    benign["federation"]["flower"] = {"connect_timeout": 10.0}
    benign["federation"]["bank"]["warmup"] = False  # no weights in the first message
    sent = yaml.safe_load(yaml.safe_dump(benign))
    sent["trainer"]["callbacks"] = [popen]
    sent["model"]["init_args"]["optimizer"] = "subprocess.Popen"
    app = write_app(yaml.safe_dump(sent), tmp_path / "app")
    (app / "coordinator.py").write_text(
        "from omnifm.federated.flower import make_server_app\n\n"
        f"app = make_server_app({yaml.safe_dump(benign)!r})\n"
    )
    project = tomllib.loads((app / "pyproject.toml").read_text())
    project["tool"]["flwr"]["app"]["components"]["serverapp"] = "coordinator:app"
    (app / "pyproject.toml").write_text(tomli_w.dumps(project, multiline_strings=True))
    seen = deployment.log("ct").count("RecipeRefused")
    # Execute: what the coordinator's `flwr run` sends
    run = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), LINK, "--stream"],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # Assert: each site refused with where and how to allow it; the server logged the reasons
    out = run.stdout + run.stderr
    refusal = "trainer.callbacks[0].class_path: 'subprocess.Popen' is not in the allowlist"
    assert "did not say which client it is" in out and "RecipeRefused" in out, out[-3000:]
    assert refusal in out and "model.init_args.optimizer: 'subprocess.Popen'" in out
    assert "--node-config \"allowed-classes='subprocess.Popen'\"" in out
    assert "0 clients connected" in out and "nodes failed" in out
    deployment.wait_for("ct", "RecipeRefused", timeout=30, count=seen + 1)
    assert refusal in deployment.log("ct")
    assert not marker.exists()  # nothing was executed


@pytest.mark.slow
def test_a_killed_supernode_is_left_out_and_the_round_completes(
    deployment: LocalDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    # Prepare: kill mri's SuperNode (and its ClientApp) as soon as round 1 reaches it
    recipe = write_recipe(tmp_path, "kill", rounds=1)
    monkeypatch.setenv("FLWR_HOME", str(deployment.home))
    seen = deployment.log("mri").count("Receiving: train message")

    def kill_mid_round() -> None:
        deployment.wait_for("mri", "Receiving: train message", timeout=300, count=seen + 1)
        deployment.kill("mri")

    killer = threading.Thread(target=kill_mid_round, daemon=True)
    killer.start()
    # Execute
    fit(
        recipe,
        tmp_path / "flower",
        "--federation.backend=flower",
        f"--federation.flower.superlink={LINK}",
        "--federation.min_clients=1",
    )
    killer.join(timeout=10)
    # Assert: round 1 aggregated ct alone; mri is reported, not fatal
    assert deployment.procs["mri"].poll() is not None
    state = last_state(tmp_path / "flower", "kill")
    assert state["round"] == 1 and state["server"]["sampler"]["history"] == [["ct", "mri"]]
    out = capfd.readouterr().out  # the ServerApp's log, streamed by flwr run
    assert "mri failed and is left out of round 1" in out and "Node Unavailable" in out
    assert "round 1: 1 replies" in out
    results = (tmp_path / "flower" / "kill" / "version_0" / "results.csv").read_text()
    ct, mri = (line for line in results.splitlines() if line.startswith(("ct,", "mri,")))
    assert "Unavailable" in mri and "Unavailable" not in ct  # mri's node is gone by the test


def test_secure_aggregation_ends_within_one_quantization_step_of_the_plain_run(
    tmp_path: Path,
) -> None:
    """SecAgg+ (Flower's workflow and mod): the server sees only the mean update, which
    differs from the plain mean by the quantization (16 / 2**22 per unit of weight)."""
    pytest.importorskip("ray", reason="Flower's simulation needs Ray: pip install 'omnifm[flower]'")
    recipe = write_recipe(tmp_path, "tiny", rounds=1)
    with torch_threads(1):
        fit(recipe, tmp_path / "inprocess")
    secure = ("--federation.backend=flower", "--federation.flower.secure_aggregation.max_weight=16")
    fit(recipe, tmp_path / "secure", *secure)
    plain = load_checkpoint(tmp_path / "inprocess/tiny/version_0/checkpoints/last.pt")
    masked = load_checkpoint(tmp_path / "secure/tiny/version_0/checkpoints/last.pt")
    shared, reference = masked["server"]["shared"], plain["server"]["shared"]
    assert list(shared) == list(reference)
    step = 16 / 2**22
    for key, value in reference.items():
        if value.is_floating_point():  # 16 examples of weight 16: one step per site at most
            torch.testing.assert_close(shared[key], value, atol=2 * step, rtol=0.0)
        else:  # integer buffers travel in the clear
            assert torch.equal(shared[key], value), key
    assert len(masked["server"]["bank"]["vectors"]) > 0  # the prototypes came in the clear


def test_secure_aggregation_refuses_what_needs_each_sites_state(tmp_path: Path) -> None:
    from omnifm.federated.flower.serverapp import FlowerFederation
    from omnifm.recipe import load_recipe

    recipe = write_recipe(tmp_path, "tiny", strategy="SCAFFOLD")
    text = recipe.read_text() + "  flower: {secure_aggregation: {max_weight: 16}}\n"
    with pytest.raises(ValueError, match=r"cannot serve the strategy SCAFFOLD"):
        FlowerFederation(None, load_recipe(text))  # type: ignore[arg-type]


def test_a_site_update_beyond_the_clipping_range_is_refused() -> None:
    import numpy as np

    from omnifm.federated.config import SecureAggregation
    from omnifm.federated.flower.secure import masked_reply

    options = SecureAggregation(clipping_range=1.0, max_weight=10.0)
    update = [np.array([0.5, -3.0])]
    masked_reply(update, {}, 2, {}, {}, options)  # 3 * 2 / 10 is inside
    with pytest.raises(ValueError, match=r"beyond the clipping range 1"):
        masked_reply(update, {}, 5, {}, {}, options)  # 3 * 5 / 10 is not


def test_private_uploads_and_training_are_accounted_on_flower(tmp_path: Path) -> None:
    """On Flower each site noises its own uploads and gradients; the server's ledger counts
    them from what the sites report, as in process."""
    pytest.importorskip("ray", reason="Flower's simulation needs Ray: pip install 'omnifm[flower]'")
    recipe = write_recipe(tmp_path, "tiny", rounds=1)
    private = (
        "--federation.bank.privacy.noise_multiplier=4.0",
        "--federation.dp_sgd.noise_multiplier=1.0",
        "--federation.dp_sgd.epsilon=50.0",
    )
    fit(recipe, tmp_path, "--federation.backend=flower", *private)
    ledger = last_state(tmp_path, "tiny")["server"]["privacy"]
    assert ledger["releases"] == {"ct": 2, "mri": 2}  # the warm-up and round 1
    assert {c: len(h) for c, h in ledger["trained"].items()} == {"ct": 1, "mri": 1}
    noise, rate, steps = ledger["trained"]["ct"][0]
    assert (noise, steps) == (1.0, 2) and 0.0 < rate <= 1.0
