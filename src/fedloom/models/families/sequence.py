"""Text and tabular members of HtFLlib's families (Zhang et al., "HtFLlib", KDD 2025), each a feature
extractor whose output width is the federation's feature dimension D (HtFLlib passes ``feature_dim`` as their
hidden width):

- ``fasttext``: embedding(V, D, padding 0) -> mean over positions -> fc1 Linear(D, D) (Joulin et al., 2017).
- ``text-logreg``: embedding(V, D) -> mean (HtFLlib's TextLogisticRegression; the head is the regression).
- ``lstm``: embedding(V, D, padding 0) -> 2-layer LSTM(D) -> ReLU of the last position (HtFLlib's LSTMNet).
- ``gru``: the same with a 2-layer GRU, the last position without ReLU (HtFLlib's GRUNet).
- ``bilstm``: embedding(V, D) -> 1-layer bidirectional LSTM(D) -> last position [2D] -> fc1 Linear(2D, D)
  (HtFLlib's BiLSTM_TextClassification as its families build it: attention off).
- ``transformer``: embedding(V, D) x sqrt(D) + sinusoidal positions -> post-norm encoder layers (ReLU, feed
  forward 2048) -> the first position (HtFLlib's TransformerModel; nn.TransformerEncoderLayer's names).
- ``amazon-mlp``: HtFLlib's AmazonMLP: Linear-ReLU through the hidden widths, then Linear(., 100)-ReLU.

Deviations, documented in docs/heterogeneous.md: dropout is left out (the models are pure functions of their
parameters); HtFLlib's fastText, TextLogisticRegression, LSTMNet and GRUNet apply log_softmax after their
``fc``, which its BaseHeadSplit turns into a log_softmax over the pooled *features*; fedloom does not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedloom.models.families.common import FeaturePool
from fedloom.models.families.vit import SelfAttention


class MeanEmbed(nn.Module):
    def __init__(self, vocab: int, dim: int, padding_idx: int | None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=padding_idx)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).mean(dim=1)


class FastText(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.fc1 = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.embedding(tokens).mean(dim=1))


class Recurrent(nn.Module):
    """LSTMNet (``cell='lstm'``, ReLU on the last output) or GRUNet (``cell='gru'``)."""

    def __init__(self, vocab: int, dim: int, cell: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        setattr(self, cell, rnn(dim, dim, num_layers=2, batch_first=True))
        self.cell = cell

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = getattr(self, self.cell)(self.embedding(tokens))
        last = out[:, -1]
        return torch.relu(last) if self.cell == "lstm" else last


class BiLSTM(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.lstm_layer = nn.LSTM(dim, dim, num_layers=1, bidirectional=True, batch_first=True)
        self.fc1 = nn.Linear(2 * dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm_layer(self.word_embeddings(tokens))
        return self.fc1(out[:, -1])


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with nn.TransformerEncoderLayer's parameter names."""

    def __init__(self, dim: int, heads: int, ff: int = 2048) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1, self.linear2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))


class Transformer(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int, max_len: int) -> None:
        super().__init__()
        self.dim = dim
        self.embedding = nn.Embedding(vocab, dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.register_buffer("pe", sinusoidal(max_len, dim), persistent=False)  # a constant, never trained
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads) for _ in range(layers)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens) * math.sqrt(self.dim) + self.pe[: tokens.shape[1]]
        return self.layers(x)[:, 0]


def sinusoidal(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s positional encoding [length, dim]."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return pe


class AmazonMLP(nn.Module):
    def __init__(self, fan_in: int, hidden: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for dim in (*hidden, 100):
            layers += [nn.Linear(fan_in, dim), nn.ReLU()]
            fan_in = dim
        self.encoder = nn.Sequential(*layers)
        self.fc = FeaturePool(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))
