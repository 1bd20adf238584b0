"""Sent140, LEAF's federated Sentiment140 (Go, Bhayani & Huang, 2009; Caldas et al., 2018): binary tweet
sentiment, one natural client per Twitter user.

Two formats, tried in this order in --data-dir, $FEDLOOM_DATA and ~/.cache/fedloom:
1. LEAF json (``sent140/data/all_data/*.json`` or ``train/`` + ``test/``), x = [id, date, query, user, text],
   y = 0 (negative) or 1 (positive);
2. the original ``training.1600000.processed.noemoticon.csv`` of Sentiment140's trainingandtestdata.zip
   (latin-1, columns polarity 0/4, id, date, query, user, text), grouped by user as LEAF does.
Neither is downloaded: Sentiment140 publishes no checksum to verify against. Text goes through
fedloom.data.text (vocabulary from the chosen users' tweets, at most ``vocab_size`` entries); sequences are
padded or cut to ``max_len`` tokens (LEAF: 25). Users are chosen as described in leaf.py.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir, check_labels, first_found, missing, search_dirs
from fedloom.data.datasets.leaf import (cap_samples, choose_users, leaf_dirs, leaf_json_files, natural_ids,
                                        read_leaf)
from fedloom.data.text import encode_texts
from fedloom.errors import DataError

CSV_NAME = "training.1600000.processed.noemoticon.csv"
Tweets = dict[str, tuple[list[str], list[int]]]


def leaf_tweets(files: list[Path]) -> Tweets:
    out: Tweets = {}
    for user, (xs, ys) in read_leaf(files).items():
        if any(not isinstance(x, list) or len(x) < 5 for x in xs):
            raise DataError(f"{files[0].parent}: Sent140 x entries must be [id, date, query, user, text]")
        out[user] = ([str(x[4]) for x in xs], [int(float(y)) for y in ys])
    return out


def csv_tweets(path: Path) -> Tweets:
    out: Tweets = {}
    try:
        with open(path, newline="", encoding="latin-1") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if len(row) != 6 or row[0] not in ("0", "4"):
                    raise DataError(f"{path}:{lineno}: expected polarity (0 or 4), id, date, query, user, text")
                texts, labels = out.setdefault(row[4], ([], []))
                texts.append(row[5])
                labels.append(1 if row[0] == "4" else 0)
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return out


def find_source(d: Path) -> Optional[tuple[str, object]]:
    files = leaf_json_files(d)
    if files:
        return "leaf", files
    return ("csv", d / CSV_NAME) if (d / CSV_NAME).is_file() else None


@DATASETS.register("sent140")
@dataclass(frozen=True)
class Sent140:
    """Sent140 as token ids with one natural client per user."""

    max_len: int = hp(25, ge=1, help="tokens per item")
    vocab_size: Optional[int] = hp(None, ge=3, help="most vocabulary entries (None: every word seen min_freq times)")
    min_freq: int = hp(1, ge=1, help="fewest occurrences of a word in the vocabulary")
    users: Optional[int] = hp(None, ge=0, help="users kept (0: every user; None: as many as the run has clients)")
    min_user_samples: int = hp(10, ge=1, help="fewest samples a kept user has")
    max_user_samples: Optional[int] = hp(None, ge=1, help="most samples kept per user (None: all)")

    default_partition: ClassVar[str] = "natural"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, leaf_dirs("sent140") + ("sentiment140",))
        found = first_found(tried, find_source)
        if found is None:
            check_given_dir(ctx.data_dir, "Sent140", f"LEAF json all_data/*.json or {CSV_NAME}", tried)
            raise missing("Sent140", f"LEAF json all_data/*.json or {CSV_NAME}", tried,
                          "run LEAF's data/sent140/preprocess.sh (https://github.com/TalwalkarLab/leaf) and copy "
                          "its data/ folder to ~/.cache/fedloom/sent140/data, or unzip Sentiment140's "
                          "trainingandtestdata.zip (http://help.sentiment140.com/for-students) into "
                          "~/.cache/fedloom/sent140.")
        kind, where = found
        tweets = leaf_tweets(where) if kind == "leaf" else csv_tweets(where)  # type: ignore[arg-type]
        return self._pooled(tweets, ctx, str(where[0].parent if kind == "leaf" else where))  # type: ignore[index]

    def _pooled(self, tweets: Tweets, ctx: LoadContext, source: str) -> PooledDataset:
        chosen = choose_users({u: len(y) for u, (_, y) in tweets.items()}, self.users, ctx.num_clients,
                              self.min_user_samples, ctx.seed, "users")
        texts: list[str] = []
        labels: list[int] = []
        counts: list[int] = []
        for i, user in enumerate(chosen):
            keep = cap_samples(len(tweets[user][1]), self.max_user_samples, ctx.seed, i)
            texts += [tweets[user][0][j] for j in keep]
            labels += [tweets[user][1][j] for j in keep]
            counts.append(len(keep))
        x, vocab = encode_texts(texts, self.max_len, self.vocab_size, self.min_freq)
        y = check_labels(np.array(labels, dtype=np.int64), 2, source)
        return PooledDataset(name="sent140", x=torch.from_numpy(x), y=torch.from_numpy(y), num_classes=2,
                             natural_ids=natural_ids(counts), class_names=["negative", "positive"],
                             source=source, vocab_size=len(vocab))
