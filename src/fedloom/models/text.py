"""Models for token sequences (x: int64 ids [N, L]).

``fasttext``: PFLlib's fastText text classifier (after Joulin et al., "Bag of Tricks for Efficient Text
Classification", 2017): embedding(V, d, padding_idx=0) -> mean over the L positions (padding included, as in
PFLlib) -> fc(d, d) [body] | fc(d, C) [head]. PFLlib uses d = 32 (its ``emb_dim``) and no activation.

``char-lstm``: the Shakespeare next-character model of McMahan et al. (AISTATS 2017) and LEAF: embedding(V, 8)
-> 2-layer LSTM(256) -> output at the last position [body] | fc(256, C) [head]. V defaults to the number of
classes (next-character prediction over the same alphabet).

V (the vocabulary size) comes from the dataset (``PooledDataset.vocab_size``, passed by build_model) unless the
option ``vocab_size`` sets it. Both are pure functions of their parameters, so torch.func.functional_call works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.models.base import MODELS, SplitModel


def _check_tokens(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 1:
        raise ConfigError(f"model '{name}' needs token sequences [L] (a text dataset such as ag-news, sent140 or "
                          f"shakespeare); this dataset has input shape {tuple(input_shape)}")


class MeanEmbedding(nn.Module):
    """Token ids [B, L] -> mean embedding [B, d]."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).mean(dim=1)


class LastStepLSTM(nn.Module):
    """Token ids [B, L] -> LSTM output at the last position [B, hidden]."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return out[:, -1]


@MODELS.register("fasttext")
@dataclass(frozen=True)
class FastText:
    hidden: int = hp(32, ge=1, help="embedding and hidden width")
    vocab_size: Optional[int] = hp(None, ge=1, help="vocabulary size (None: the dataset's)")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        _check_tokens("fasttext", input_shape)
        if self.vocab_size is None:
            raise ConfigError("model 'fasttext' needs the vocabulary size: use a text dataset (ag-news, sent140) "
                              "or set --fasttext.vocab-size")
        body = nn.Sequential(MeanEmbedding(self.vocab_size, self.hidden), nn.Linear(self.hidden, self.hidden))
        return SplitModel(body, nn.Linear(self.hidden, num_classes), feature_dim=self.hidden)


@MODELS.register("char-lstm")
@dataclass(frozen=True)
class CharLSTM:
    embed_dim: int = hp(8, ge=1, help="character embedding width")
    hidden: int = hp(256, ge=1, help="LSTM width")
    layers: int = hp(2, ge=1, help="LSTM layers")
    vocab_size: Optional[int] = hp(None, ge=1, help="vocabulary size (None: the number of classes)")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        _check_tokens("char-lstm", input_shape)
        vocab = self.vocab_size if self.vocab_size is not None else num_classes
        body = LastStepLSTM(vocab, self.embed_dim, self.hidden, self.layers)
        return SplitModel(body, nn.Linear(self.hidden, num_classes), feature_dim=self.hidden)
