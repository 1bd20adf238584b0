from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import fedloom.data.datasets.fashion_mnist as fm
from fedloom.data.base import DATASETS, LoadContext
from fedloom.data.datasets import Digits, FashionMNIST, Synthetic
from fedloom.errors import ConfigError, DataError
from data_helpers import write_fake_fmnist


def ctx(data_dir: Path | None = None, seed: int = 0, clients: int = 10) -> LoadContext:
    return LoadContext(data_dir, seed, clients)


def test_registered() -> None:
    assert {"digits", "fashion-mnist", "synthetic"} <= set(DATASETS.names())
    assert DATASETS.get("Fashion_MNIST") is FashionMNIST


def test_digits_shape_and_range() -> None:
    ds = Digits().load(ctx())
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.x.min() == -1.0 and ds.x.max() == 1.0 and ds.num_classes == 10


def test_synthetic_shapes_determinism_and_power_law() -> None:
    a = Synthetic(alpha=0.5, beta=0.5).load(ctx(seed=3, clients=40))
    b = Synthetic(alpha=0.5, beta=0.5).load(ctx(seed=3, clients=40))
    c = Synthetic(alpha=0.5, beta=0.5).load(ctx(seed=4, clients=40))
    assert a.x.shape[1:] == (60,) and a.x.dtype == torch.float32 and len(a.natural_ids) == len(a)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert len(a) != len(c) or not torch.equal(a.x, c.x)
    sizes = np.bincount(a.natural_ids)
    assert len(sizes) == 40 and sizes.min() >= 50 and sizes.max() <= 5000
    assert sizes.max() > 4 * np.median(sizes)  # heavy-tailed (lognormal) sizes
    assert 0 <= a.y.min() and a.y.max() < 10


def test_synthetic_options() -> None:
    ds = Synthetic(devices=5, dimension=7, num_classes=3, iid=True, max_samples_per_device=60).load(ctx())
    assert ds.x.shape[1] == 7 and ds.num_classes == 3
    assert np.array_equal(np.unique(ds.natural_ids), np.arange(5))
    assert np.bincount(ds.natural_ids).max() <= 60
    for bad in (dict(alpha=-1.0), dict(beta=-0.1), dict(devices=0)):
        with pytest.raises(ConfigError):
            Synthetic(**bad)


def test_fmnist_parses_gz_and_raw(tmp_path: Path) -> None:
    write_fake_fmnist(tmp_path / "gz")
    ds = FashionMNIST().load(ctx(tmp_path / "gz"))
    assert ds.x.shape == (10, 1, 28, 28) and ds.y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert ds.x.min() >= -1.0 and ds.x.max() <= 1.0 and len(ds.class_names) == 10
    write_fake_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)  # torchvision layout, uncompressed
    raw = FashionMNIST().load(ctx(tmp_path))
    assert torch.equal(raw.x, ds.x)


def test_fmnist_normalization(tmp_path: Path) -> None:
    write_fake_fmnist(tmp_path)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz") as fh:
        first = np.frombuffer(fh.read()[16 : 16 + 784], dtype=np.uint8).reshape(28, 28)
    ds = FashionMNIST().load(ctx(tmp_path))
    expected = torch.from_numpy((first.astype(np.float32) / 255 - 0.5) / 0.5)
    assert torch.allclose(ds.x[0, 0], expected)


def test_fmnist_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fmnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FEDLOOM_DATA", str(tmp_path))
    assert len(FashionMNIST().load(ctx())) == 10


def test_fmnist_not_found_lists_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataError) as err:
        FashionMNIST().load(ctx(None))
    msg = str(err.value)
    for path in (tmp_path / "home" / ".cache" / "fedloom" / "FashionMNIST" / "raw", tmp_path / "nowhere"):
        assert str(path) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "github.com/zalandoresearch/fashion-mnist" in msg


def test_fmnist_given_data_dir_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fmnist(tmp_path / "system")
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    assert len(FashionMNIST().load(ctx(None))) == 10  # found by the search without --data-dir
    write_fake_fmnist(tmp_path / "mine")
    (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        FashionMNIST().load(ctx(tmp_path / "mine"))
    assert f"{tmp_path / 'mine'} lacks t10k-labels-idx1-ubyte" in str(err.value)
    with pytest.raises(DataError, match="no such folder"):
        FashionMNIST().load(ctx(tmp_path / "nope"))


def test_fmnist_corrupt_files(tmp_path: Path) -> None:
    write_fake_fmnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path) as fh:
        data = fh.read()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:-100])  # truncated payload
    with pytest.raises(DataError, match="corrupt or truncated"):
        FashionMNIST().load(ctx(tmp_path))
    path.write_bytes(gzip.compress(data)[:50])  # truncated gzip stream
    with pytest.raises(DataError, match="cannot read"):
        FashionMNIST().load(ctx(tmp_path))
    path.write_bytes(gzip.compress(b"\x01\x02" + data[2:]))
    with pytest.raises(DataError, match="magic"):
        FashionMNIST().load(ctx(tmp_path))


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fmnist() -> None:
    ds = FashionMNIST().load(ctx(fm.SYSTEM_DIR))
    assert ds.x.shape == (70000, 1, 28, 28)
    assert np.array_equal(np.bincount(ds.y.numpy()), np.full(10, 7000))
