"""A deterministic BERT-style WordPiece tokenizer built from a list of texts (``tokenizers``
only, so it loads fast on its own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

__all__ = ["SPECIAL_TOKENS", "wordpiece_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Tokenizer:
    """A lower-casing BERT-style WordPiece tokenizer whose vocabulary comes from ``texts``.

    The vocabulary is the special tokens, every character seen (as a word start and as a
    ``##`` continuation, so an unseen word splits into known pieces instead of ``[UNK]``), then
    the most frequent whole words (ties in alphabetical order) up to ``vocab_size``. It is a
    pure function of the texts: ``tokenizers``' own ``WordPieceTrainer`` breaks ties between
    merges in a hash order that changes from process to process, and a model rebuilt to resume
    or test a run must map every question to the same ids.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        pieces = splitter.pre_tokenize_str(normalizer.normalize_str(text))
        words.update(word for word, _ in pieces)
    if not words:
        raise ValueError("cannot build a tokenizer from no text; give the training questions")
    chars = sorted({c for word in words for c in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    if vocab_size < len(vocab):
        raise ValueError(
            f"text_vocab_size={vocab_size} is smaller than the {len(vocab)} special and "
            "character tokens the questions need; raise it"
        )
    known = set(vocab)
    ranked = sorted((w for w in words if w not in known), key=lambda w: (-words[w], w))
    vocab += ranked[: vocab_size - len(vocab)]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tokenizer
