"""A word-level tokenizer for instructions, built from the training instruction corpus.

Text is lower-cased and split into runs of letters/digits (punctuation is
dropped), so "Push the RED cube!" and "push the red cube" encode alike. Ids
0-3 are the specials ``<pad> <unk> <bos> <eos>``; the words of the corpus
follow in sorted order, so the same corpus always gives the same ids. The
vocabulary travels in the artifact contract (``extra.vla.tokenizer``) via
``to_dict`` / ``from_dict``.

Imports the standard library and numpy only (the runtime uses it). Never torch.
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from onboard.errors import OnboardError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation and spacing are dropped."""
    return _WORD.findall(str(text).lower())


class WordTokenizer:
    def __init__(self, vocab: list[str]):
        if list(vocab[:4]) != list(SPECIALS):
            raise OnboardError(f"vocabulary must start with {list(SPECIALS)}, got {list(vocab[:4])}",
                               field="tokenizer.vocab", fix="rebuild the tokenizer with WordTokenizer.build")
        if len(set(vocab)) != len(vocab):
            raise OnboardError("vocabulary has duplicate words", field="tokenizer.vocab",
                               fix="rebuild the tokenizer with WordTokenizer.build")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, corpus: Iterable[str]) -> "WordTokenizer":
        found = sorted({w for text in corpus for w in words(text)})
        if not found:
            raise OnboardError("the instruction corpus has no words", field="corpus",
                               fix="build the tokenizer from the training instructions")
        return cls(list(SPECIALS) + found)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def max_words(self, corpus: Iterable[str]) -> int:
        return max((len(words(t)) for t in corpus), default=0)

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` outside the vocabulary, in order of appearance (no repeats)."""
        out = []
        for w in words(text):
            if w not in self.index and w not in out:
                out.append(w)
        return out

    def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 (max_len,), mask bool (max_len,))``: <bos> words <eos>, then <pad>.
        Unknown words become <unk>; words beyond ``max_len - 2`` are cut (the <eos> stays)."""
        if max_len < 3:
            raise OnboardError(f"max_len must be >= 3 (bos, a word, eos), got {max_len}", field="max_len",
                               fix="use the max_len recorded with the tokenizer")
        ids = [self.index.get(w, UNK_ID) for w in words(text)][: max_len - 2]
        seq = [BOS_ID] + ids + [EOS_ID]
        out = np.full(max_len, PAD_ID, dtype=np.int64)
        out[: len(seq)] = seq
        return out, out != PAD_ID

    def decode(self, ids) -> str:
        """Words of ``ids`` joined by spaces; <pad>, <bos> and <eos> are dropped, <unk> is kept."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i in (PAD_ID, BOS_ID):
                continue
            if i == EOS_ID:
                break
            out.append(self.vocab[i] if 0 <= i < len(self.vocab) else UNK)
        return " ".join(out)

    def to_dict(self) -> dict:
        return {"kind": "word", "lowercase": True, "pattern": _WORD.pattern, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, doc: dict, *, source: str = "<tokenizer>") -> "WordTokenizer":
        if not isinstance(doc, dict) or doc.get("kind") != "word" or not isinstance(doc.get("vocab"), list) \
                or not all(isinstance(w, str) for w in doc["vocab"]):
            raise OnboardError("tokenizer must be {kind: word, vocab: [str, ...]}", file=source,
                               field="extra.vla.tokenizer", fix="re-export the artifact with `onboard export`")
        return cls(doc["vocab"])
