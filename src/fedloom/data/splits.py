"""Train/test splits of a partition: per client (PFLlib) or one global test set shared by every client.

- ``per-client`` (default, PFLlib): each client's samples are shuffled and cut like scikit-learn's
  train_test_split(train_size=r): n_test = ⌈(1 - r)·n⌉, n_train = n - n_test. Test accuracy is then measured on
  each client's own distribution (personalized evaluation).
- ``global``: before partitioning, a stratified test set of ⌈(1 - r)·N⌉ of all N samples is held out (class c
  contributes its largest-remainder share of ⌈(1 - r)·N⌉ in proportion to its size n_c, drawn at random);
  the partitioner only sees the remaining pool, every client's train set is its whole part, and every client's
  test set is the same global set (so the pooled accuracy is the global model's accuracy on a held-out IID set,
  as in FedAvg/FedProx-style evaluation). Evaluation code is unchanged: it scores each client on its test indices.
"""

from __future__ import annotations

import math

import numpy as np

from fedloom.data.partitioners.common import class_indices, largest_remainder
from fedloom.errors import ConfigError, DataError
from fedloom.seeding import numpy_generator

TEST_SPLITS = ("per-client", "global")


def check_test_split(name: str) -> str:
    """The canonical test-split name; ConfigError listing the choices otherwise."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in TEST_SPLITS:
        raise ConfigError(f"unknown test_split '{name}'. Valid choices: {', '.join(TEST_SPLITS)}")
    return key


def split_sizes(n: int, train_ratio: float) -> tuple[int, int]:
    """(n_train, n_test) with n_test = ceil((1 - train_ratio) * n), rounded to 9 decimals against float noise."""
    n_test = math.ceil(round((1.0 - train_ratio) * n, 9))
    return n - n_test, n_test


def min_client_size(train_ratio: float) -> int:
    """Smallest n whose ceil-rule split has >= 1 train and >= 1 test sample."""
    n = max(1, int(1 / train_ratio) - 2)
    while min(split_sizes(n, train_ratio)) < 1:
        n += 1
    return n


def split_train_test(
    parts: list[np.ndarray], train_ratio: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-client split: shuffle each client's indices and cut them by the ceil rule; both halves sorted."""
    train, test = [], []
    for client, idx in enumerate(parts):
        n_train, n_test = split_sizes(len(idx), train_ratio)
        if n_train < 1 or n_test < 1:
            raise DataError(
                f"client {client} has {len(idx)} samples: too few for a train/test split with "
                f"train_ratio={train_ratio}; raise min_samples, use fewer clients or a larger alpha"
            )
        perm = numpy_generator(seed, -1, client, "train-test-split").permutation(len(idx))
        shuffled = np.asarray(idx, dtype=np.int64)[perm]
        train.append(np.sort(shuffled[:n_train]))
        test.append(np.sort(shuffled[n_train:]))
    return train, test


def global_holdout(labels: np.ndarray, train_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, pool): a stratified random test set of ceil((1 - r)·N) samples and the rest, both sorted int64."""
    labels = np.asarray(labels)
    n_test = split_sizes(len(labels), train_ratio)[1]
    by_class = class_indices(labels)
    quota = largest_remainder(n_test, np.array([len(c) for c in by_class], dtype=np.float64))
    rng = numpy_generator(seed, -1, -1, "global-test-split")
    test = np.sort(np.concatenate([rng.permutation(idx)[:q] for idx, q in zip(by_class, quota)])).astype(np.int64)
    pool = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test, assume_unique=True)
    return test, pool
