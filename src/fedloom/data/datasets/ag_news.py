"""AG News (Zhang, Zhao & LeCun, "Character-level Convolutional Networks for Text Classification", NIPS 2015):
4 topics (World, Sports, Business, Sci/Tech), pooled train + test = 127,600 news items.

Format: the ``ag_news_csv`` files ``train.csv`` and ``test.csv``, rows ``"class","title","description"``
without a header, class 1..4 (torchtext's AG_NEWS source, which PFLlib uses). Searched in --data-dir,
$FEDLOOM_DATA and ~/.cache/fedloom (also ``ag_news_csv/``, ``ag-news/``, ``AG_NEWS/``);
``--ag-news.download true`` fetches them and checks torchtext's MD5s. Text = title + " " + description,
tokenized by fedloom.data.text (lowercase words); the vocabulary is built from the pooled texts and holds at
most ``vocab_size`` entries (None: every word seen ``min_freq`` times); sequences are padded or cut to
``max_len`` (PFLlib: 200). x is int64 [N, max_len].
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
from fedloom.data.datasets.common import (check_given_dir, check_labels, download_hint, first_found, missing,
                                          search_dirs)
from fedloom.data.download import RemoteFile, default_data_root, download_requested, fetch
from fedloom.data.text import encode_texts
from fedloom.errors import DataError

BASE = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/"
REMOTE = (RemoteFile("train.csv", BASE + "train.csv", "md5:b1a00f826fdfbd249f79597b59e1dc12"),
          RemoteFile("test.csv", BASE + "test.csv", "md5:d52ea96a97a2d943681189a97654912d"))
CLASS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and 0-based labels of one AG News csv file."""
    texts, labels = [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if len(row) < 2 or not row[0].strip().isdigit():
                    raise DataError(f"{path}:{lineno}: expected \"class\",\"title\",\"description\", got {row!r}")
                labels.append(int(row[0]) - 1)
                texts.append(" ".join(row[1:]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return texts, check_labels(np.array(labels, dtype=np.int64), 4, path)


@DATASETS.register("ag-news")
@dataclass(frozen=True)
class AGNews:
    """AG News as token ids; ``max_len`` tokens per item, vocabulary of at most ``vocab_size`` entries."""

    max_len: int = hp(200, ge=1, help="tokens per item")
    vocab_size: Optional[int] = hp(None, ge=3, help="most vocabulary entries (None: every word seen min_freq times)")
    min_freq: int = hp(1, ge=1, help="fewest occurrences of a word in the vocabulary")
    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        names = [r.name for r in REMOTE]
        tried = search_dirs(ctx.data_dir, ("", "ag_news_csv", "ag-news", "AG_NEWS", "ag-news/ag_news_csv"))
        folder = first_found(tried, lambda d: d if all((d / n).is_file() for n in names) else None)
        if folder is None:
            check_given_dir(ctx.data_dir, "AG News", "train.csv and test.csv (ag_news_csv)", tried, names)
        if folder is None and download_requested(self.download):
            folder = default_data_root() / "ag-news"
            for remote in REMOTE:
                fetch(remote, folder)
        if folder is None:
            raise missing("AG News", "train.csv and test.csv (ag_news_csv)", tried,
                          f"{download_hint('ag-news')} Or download {BASE}train.csv and test.csv.")
        parts = [read_csv(folder / n) for n in names]
        texts = parts[0][0] + parts[1][0]
        x, vocab = encode_texts(texts, self.max_len, self.vocab_size, self.min_freq)
        y = np.concatenate([parts[0][1], parts[1][1]])
        return PooledDataset(name="ag-news", x=torch.from_numpy(x), y=torch.from_numpy(y), num_classes=4,
                             class_names=list(CLASS_NAMES), source=str(folder), vocab_size=len(vocab))
