"""fasttext and char-lstm: shapes, the body/head split, functional_call, and vocabulary plumbing."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fedloom.errors import ConfigError
from fedloom.models import MODELS, build_model, default_model_for


def test_fasttext_shapes_split_and_pfllib_sizes() -> None:
    model = build_model("fasttext", {}, (12,), 4, seed=0, vocab_size=50)
    names = dict(model.named_parameters())
    assert names["body.0.embedding.weight"].shape == (50, 32)  # PFLlib: hidden_dim (emb_dim) 32
    assert names["body.1.weight"].shape == (32, 32) and names["head.weight"].shape == (4, 32)
    assert all(n.startswith(("body.", "head.")) for n in names)
    x = torch.randint(0, 50, (5, 12))
    feats = model(x, part="body")
    assert feats.shape == (5, 32) and model(x).shape == (5, 4)
    assert torch.allclose(model(feats, part="head"), model(x))
    params = {k: torch.zeros_like(v) for k, v in names.items()}
    assert torch.equal(functional_call(model, params, (x,)), torch.zeros(5, 4))


def test_char_lstm_shapes_and_functional_call() -> None:
    model = build_model("char-lstm", {}, (80,), 80, seed=0)  # vocabulary = the classes by default
    names = dict(model.named_parameters())
    assert names["body.embedding.weight"].shape == (80, 8) and names["head.weight"].shape == (80, 256)
    assert names["body.lstm.weight_hh_l1"].shape == (4 * 256, 256)  # two layers of 256
    x = torch.randint(0, 80, (3, 80))
    assert model(x, part="body").shape == (3, 256) and model(x).shape == (3, 80)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in names.items()}
    loss = functional_call(model, params, (x,)).logsumexp(-1).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_same_seed_same_init_and_options() -> None:
    a = build_model("char-lstm", {"hidden": 16, "layers": 1}, (10,), 80, seed=3)
    b = build_model("char-lstm", {"hidden": 16, "layers": 1}, (10,), 80, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    explicit = build_model("fasttext", {"vocab_size": 120, "hidden": 4}, (3,), 2, seed=0, vocab_size=99)
    assert explicit.body[0].embedding.num_embeddings == 120  # an explicit option wins over the dataset's
    with pytest.raises(ConfigError, match="at least the dataset's vocabulary size 99"):  # ids >= 7 would crash
        build_model("fasttext", {"vocab_size": 7, "hidden": 4}, (3,), 2, seed=0, vocab_size=99)


def test_errors_and_default_model() -> None:
    with pytest.raises(ConfigError, match="vocabulary size"):
        build_model("fasttext", {}, (12,), 4, seed=0)
    with pytest.raises(ConfigError, match="token sequences"):
        build_model("char-lstm", {}, (1, 28, 28), 10, seed=0)
    assert {"fasttext", "char-lstm"} <= set(MODELS.names())
    assert default_model_for((80,), vocab_size=80, num_classes=80) == "char-lstm"
    assert default_model_for((200,), vocab_size=5000, num_classes=4) == "fasttext"
    assert default_model_for((60,)) == "logreg" and default_model_for((1, 28, 28)) == "cnn"
