"""Local text pipelines: a word tokenizer with a frequency vocabulary (AG News, Sent140) and LEAF's
character mapping (Shakespeare). Nothing is fetched from a hub, so the same text always gives the same ids.

Words: lowercase, then runs of letters/digits/apostrophes and single punctuation marks are tokens (close to
torchtext's ``basic_english`` that PFLlib uses for AG News, and to LEAF's Sent140 splitter). The vocabulary
holds ``<pad>`` = 0, ``<unk>`` = 1, then words by decreasing count, ties broken alphabetically so the ids do
not depend on input order; ``max_size`` counts the two specials. Sequences are truncated or right-padded with 0
to a fixed length, giving int64 arrays [N, L].

Characters: LEAF's 80-symbol alphabet (Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018); a
character's id is its position in ``LEAF_ALPHABET``; characters outside it map to the space's id.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

PAD, UNK = "<pad>", "<unk>"
_TOKEN_RE = re.compile(r"[a-z0-9']+|[.,!?;:()\"-]")

LEAF_ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
_CHAR_ID = {c: i for i, c in enumerate(LEAF_ALPHABET)}
_SPACE_ID = _CHAR_ID[" "]


def tokenize(text: str) -> list[str]:
    """Lowercase word and punctuation tokens of ``text``."""
    return _TOKEN_RE.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Token strings in id order; ``tokens[0]`` is <pad>, ``tokens[1]`` is <unk>."""

    tokens: tuple[str, ...]

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], max_size: Optional[int] = None, min_freq: int = 1) -> "Vocabulary":
        """The most frequent tokens of ``texts`` (token lists), at most ``max_size`` entries including specials."""
        counts = Counter(tok for toks in texts for tok in toks)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - 2)]
        return cls((PAD, UNK, *ranked))

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, texts: Sequence[Sequence[str]], length: int) -> np.ndarray:
        """int64 [len(texts), length]: ids of the first ``length`` tokens, unknown words -> 1, padding 0."""
        lookup, out = self.index(), np.zeros((len(texts), length), dtype=np.int64)
        for row, toks in enumerate(texts):
            ids = [lookup.get(t, 1) for t in toks[:length]]
            out[row, : len(ids)] = ids
        return out


def encode_texts(texts: Sequence[str], max_len: int, max_size: Optional[int] = None,
                 min_freq: int = 1) -> tuple[np.ndarray, Vocabulary]:
    """Tokenize, build the vocabulary from these texts, and encode them to int64 [N, max_len]."""
    tokens = [tokenize(t) for t in texts]
    vocab = Vocabulary.build(tokens, max_size, min_freq)
    return vocab.encode(tokens, max_len), vocab


def char_ids(text: str) -> np.ndarray:
    """LEAF ids of each character of ``text`` (int64); characters outside the alphabet become spaces."""
    return np.fromiter((_CHAR_ID.get(c, _SPACE_ID) for c in text), dtype=np.int64, count=len(text))


def char_windows(text: str, length: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Next-character samples of ``text`` as LEAF builds them: x = text[i:i+length], y = text[i+length]."""
    ids = char_ids(text)
    n = len(ids) - length
    if n <= 0:
        return np.zeros((0, length), dtype=np.int64), np.zeros(0, dtype=np.int64)
    x = np.lib.stride_tricks.sliding_window_view(ids, length)[:n].copy()
    return x, ids[length:].copy()
