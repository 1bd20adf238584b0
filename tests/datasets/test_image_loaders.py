"""MNIST, EMNIST, CIFAR-10/100, SVHN and Tiny-ImageNet loaders on tiny files in their original formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import (write_cifar10, write_cifar100, write_idx_set, write_pickle, write_svhn,
                              write_tiny_imagenet)
from fedloom.config import make_component
from fedloom.data.base import DATASETS, LoadContext
from fedloom.data.datasets.emnist import stems as emnist_stems
from fedloom.data.datasets.mnist import STEMS as MNIST_STEMS
from fedloom.errors import ConfigError, DataError


def load(name: str, data_dir: Path | None, **options: object):
    return make_component(DATASETS, name, dict(options)).load(LoadContext(data_dir, 0, 4))


def test_mnist_gz_and_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path / "a", list(MNIST_STEMS), (6, 4), 10)
    ds = load("mnist", tmp_path / "a")
    assert ds.x.shape == (10, 1, 28, 28) and ds.x.dtype == torch.float32 and ds.num_classes == 10
    expected = (arrays[MNIST_STEMS[0]][0].astype(np.float32) / 255 - 0.5) / 0.5
    assert torch.allclose(ds.x[0, 0], torch.from_numpy(expected))
    assert ds.y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    write_idx_set(tmp_path / "b" / "MNIST" / "raw", list(MNIST_STEMS), (6, 4), 10, gz=False)
    assert torch.equal(load("mnist", tmp_path / "b").x, ds.x)


def test_missing_files_error_names_paths_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load("mnist", None)
    msg = str(err.value)
    for path in (tmp_path / "cache", tmp_path / "cache" / "mnist", tmp_path / "cache" / "MNIST" / "raw"):
        assert str(path) in msg
    assert "--mnist.download true" in msg and "ossci-datasets" in msg and "--data-dir" in msg
    assert "\n" not in msg  # one line, like every fedloom error
    for name in ("cifar10", "cifar100", "svhn", "tiny-imagenet", "emnist", "ag-news"):
        with pytest.raises(DataError, match=f"Looked in: {tmp_path / 'cache'}"):
            load(name, None)


def test_a_given_data_dir_is_the_only_place_searched(tmp_path: Path) -> None:
    """No silent fallback: a wrong --data-dir is an error naming it, even when the files are elsewhere."""
    write_idx_set(tmp_path / "cache" / "mnist", list(MNIST_STEMS), (6, 4), 10)  # found without --data-dir
    assert len(load("mnist", None)) == 10
    with pytest.raises(DataError, match="no such folder"):
        load("mnist", tmp_path / "mine")
    (tmp_path / "mine" / "mnist").mkdir(parents=True)
    for stem in MNIST_STEMS[:3]:
        (tmp_path / "mine" / "mnist" / f"{stem}.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load("mnist", tmp_path / "mine", download=True)  # nor a download
    msg = str(err.value)
    assert f"--data-dir {tmp_path / 'mine'} does not hold the MNIST files" in msg and "\n" not in msg
    assert f"{tmp_path / 'mine' / 'mnist'} lacks {MNIST_STEMS[3]}" in msg and "cache" not in msg
    for name in ("cifar10", "cifar100", "svhn", "tiny-imagenet", "emnist", "ag-news", "mnist-5k"):
        with pytest.raises(DataError, match=f"--data-dir {tmp_path / 'mine'} does not hold"):
            load(name, tmp_path / "mine")


def test_emnist_splits_are_transposed_and_checked(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path / "gzip", list(emnist_stems("balanced")), (5, 3), 47)
    ds = load("emnist", tmp_path)
    first = arrays[emnist_stems("balanced")[0]][0]
    assert torch.allclose(ds.x[0, 0], torch.from_numpy((first.T.astype(np.float32) / 255 - 0.5) / 0.5))
    assert ds.num_classes == 47 and len(ds.class_names) == 47
    write_idx_set(tmp_path / "gzip", list(emnist_stems("byclass")), (5, 3), 62)
    assert load("emnist", tmp_path, split="byclass").num_classes == 62
    write_idx_set(tmp_path / "gzip", list(emnist_stems("letters")), (5, 3), 26, first_label=1)
    letters = load("emnist", tmp_path, split="letters")
    assert letters.num_classes == 26 and letters.y.min() == 0
    with pytest.raises(ConfigError, match="balanced"):
        load("emnist", tmp_path, split="nope")


def test_idx_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    write_idx_set(tmp_path, list(MNIST_STEMS), (12, 4), 12)  # labels up to 11
    with pytest.raises(DataError, match="labels span 0..11"):
        load("mnist", tmp_path)


def test_cifar10_and_cifar100(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    ds = load("cifar10", tmp_path)
    assert ds.x.shape == (24, 3, 32, 32) and ds.class_names[:2] == ["c0", "c1"]
    assert ds.x.min() >= -1 and ds.x.max() <= 1
    write_cifar100(tmp_path)
    fine, coarse = load("cifar100", tmp_path), load("cifar100", tmp_path, coarse=True)
    assert fine.num_classes == 100 and coarse.num_classes == 20 and fine.x.shape == (12, 3, 32, 32)
    assert fine.y.tolist()[:6] == list(range(6)) and coarse.class_names[0] == "s0"


class _Evil:
    def __reduce__(self):  # what a malicious pickle would do when loaded
        return (print, ("pwned",))


def test_cifar_refuses_foreign_pickles(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    write_pickle(folder / "test_batch", {b"data": _Evil(), b"labels": [0]})
    with pytest.raises(DataError, match="refusing"):
        load("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"expected \[N, 3072\]"):
        load("cifar10", tmp_path)


def test_svhn_mat(tmp_path: Path) -> None:
    write_svhn(tmp_path / "svhn")
    ds = load("svhn", tmp_path)
    assert ds.x.shape == (10, 3, 32, 32) and ds.y.tolist()[:5] == [1, 2, 3, 4, 5]
    write_svhn(tmp_path / "ten", n=10)
    assert load("svhn", tmp_path / "ten").y[9] == 0  # label 10 is digit 0


def test_tiny_imagenet_folder(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path)
    ds = load("tiny-imagenet", tmp_path)
    assert ds.x.shape == (8, 3, 64, 64) and ds.num_classes == 2
    assert ds.class_names == ["goldfish", "tabby"]  # sorted wnids: n01, n02
    assert ds.y.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]  # train n01, train n02, then val in annotation order
    assert len(load("tiny-imagenet", tmp_path, max_per_class=1)) == 6
