"""Partitions in and out: fedloom's partition file, and PFLlib's per-client folder layout.

**fedloom partition file** (``clients.npz``, written by ``fedloom partition --out DIR``; read by
``--partition-file FILE``): an uncompressed NumPy ``.npz`` without pickled objects, holding

- ``manifest``: a JSON string: ``format`` ("fedloom-partition"), ``version`` (1), ``dataset`` (registry name),
  ``dataset_options``, ``dataset_size`` (samples in the pooled dataset), ``labels_sha256`` (SHA-256 of the
  pooled labels as int64 little-endian), ``num_clients``, ``num_classes``, ``partition`` (the partitioner's
  parameters) and ``partition_description``, ``train_ratio``, ``test_split``, ``data_seed``, ``partition_hash``
  (fedloom's content hash of the index arrays: a run on the file reports the same hash);
- ``train_indices`` / ``test_indices``: every client's indices into the pooled dataset, concatenated (int64);
- ``train_offsets`` / ``test_offsets``: int64 [num_clients + 1]; client i owns ``indices[offsets[i]:offsets[i+1]]``.

The same content as JSON (``{"manifest": {...}, "train": [[...], ...], "test": [[...], ...]}``) is accepted too,
for tools that do not write NumPy files; only ``manifest.dataset`` and ``manifest.dataset_size`` are required
there. The pooled dataset is fedloom's (train and test pooled, as PFLlib does), so indices mean the same thing
wherever the file is used with the same dataset; a file for another dataset or size is refused with one line.

**PFLlib layout** (Zhang et al., "PFLlib: A Beginner-Friendly and Comprehensive Personalized Federated
Learning Library", JMLR 2025): ``DIR/config.json`` plus ``DIR/train/{i}.npz`` and ``DIR/test/{i}.npz`` per
client i, each saved with ``np.savez_compressed(f, data={"x": ..., "y": ...})`` (so reading needs
``allow_pickle=True``: open only folders you trust). :func:`export_pfllib` writes fedloom's clients in that
layout (``fedloom partition --pfllib DIR``); ``--partition-file DIR`` reads one back by finding each of its
samples in the run's dataset (exact match of inputs and label), so a PFLlib run and a fedloom run use the same
clients as long as both load the dataset with the same preprocessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fedloom.data.base import PooledDataset
from fedloom.data.cache import content_hash
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.data.federated import FederatedData

FORMAT = "fedloom-partition"
VERSION = 1
FILE_NAME = "clients.npz"
Split = tuple[list[np.ndarray], list[np.ndarray]]


@dataclass
class PartitionFile:
    """A partition read from disk: its manifest and every client's train and test indices."""

    manifest: dict[str, Any]
    train: list[np.ndarray]
    test: list[np.ndarray]

    @property
    def num_clients(self) -> int:
        return len(self.train)


def labels_sha256(y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(y, dtype="<i8").tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ writing
def manifest(fd: "FederatedData", dataset: str, dataset_options: dict[str, Any], data_seed: int) -> dict[str, Any]:
    from fedloom.data.summary import describe

    return {"format": FORMAT, "version": VERSION, "dataset": dataset, "dataset_options": dataset_options,
            "dataset_size": len(fd.dataset), "labels_sha256": labels_sha256(fd.dataset.y.cpu().numpy()),
            "num_clients": fd.num_clients, "num_classes": fd.num_classes,
            "partition": dataclasses.asdict(fd.partition), "partition_description": describe(fd),
            "train_ratio": fd.train_ratio, "test_split": fd.test_split, "data_seed": data_seed,
            "partition_hash": fd.partition_hash}


def _flatten(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return flat, offsets


def write_partition_file(fd: "FederatedData", path: Path, dataset: str, dataset_options: dict[str, Any],
                         data_seed: int) -> Path:
    """Write ``fd``'s per-client indices and manifest to ``path`` (.npz, or .json by suffix)."""
    train = [t.cpu().numpy() for t in fd.train_idx]
    test = [t.cpu().numpy() for t in fd.test_idx]
    info = manifest(fd, dataset, dataset_options, data_seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps({"manifest": info, "train": [p.tolist() for p in train],
                                    "test": [p.tolist() for p in test]}, default=str))
        return path
    train_flat, train_off = _flatten(train)
    test_flat, test_off = _flatten(test)
    with open(path, "wb") as handle:  # a file handle: np.savez would append .npz to any other suffix
        np.savez(handle, manifest=np.array(json.dumps(info, default=str)), train_indices=train_flat,
                 train_offsets=train_off, test_indices=test_flat, test_offsets=test_off)
    return path


# ------------------------------------------------------------------------------------------------ reading
def read_partition_file(path: Path) -> PartitionFile:
    """A fedloom partition file (.npz or .json); ConfigError with one line if it cannot be one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"--partition-file {path}: no such file or folder")
    if path.is_dir():
        raise ConfigError(f"--partition-file {path} is a folder without PFLlib's config.json, train/ and test/")
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            info = raw["manifest"]
            train = [np.asarray(p, dtype=np.int64) for p in raw["train"]]
            test = [np.asarray(p, dtype=np.int64) for p in raw["test"]]
        else:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["manifest"]))
                train = _unflatten(z["train_indices"], z["train_offsets"])
                test = _unflatten(z["test_indices"], z["test_offsets"])
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ConfigError(f"--partition-file {path} is not a fedloom partition file ({type(exc).__name__}: "
                          f"{exc}); see docs/data.md, 'Partition files'") from None
    if not isinstance(info, dict) or "dataset" not in info or "dataset_size" not in info:
        raise ConfigError(f"--partition-file {path}: the manifest needs 'dataset' and 'dataset_size'")
    if len(train) != len(test):
        raise ConfigError(f"--partition-file {path}: {len(train)} train lists but {len(test)} test lists")
    return PartitionFile(info, train, test)


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(flat) or (np.diff(offsets) < 0).any():
        raise ValueError("offsets do not cut the index array into clients")
    return [flat[a:b].astype(np.int64) for a, b in zip(offsets[:-1], offsets[1:])]


def load_split(path: Path, dataset: str, pooled: PooledDataset, num_clients: int) -> tuple[Split, str]:
    """The (train, test) indices of ``path`` for the run's ``dataset`` and pooled data, checked, and the test
    split they imply ("global" when every client has the same test set). A PFLlib folder is matched onto
    ``pooled`` sample by sample."""
    path = Path(path).expanduser()
    if is_pfllib_folder(path):
        part = import_pfllib(path, pooled)
    else:
        part = read_partition_file(path)
        _check_manifest(path, part.manifest, dataset, pooled)
    where = f"--partition-file {path}"
    if part.num_clients != num_clients:
        raise ConfigError(f"{where} holds {part.num_clients} clients but the run has {num_clients}; "
                          f"use --clients {part.num_clients}")
    _check_indices(where, part, len(pooled))
    recorded = part.manifest.get("partition_hash")
    if recorded and recorded != content_hash(part.train, part.test):
        raise ConfigError(f"{where}: the indices do not match the manifest's partition_hash (file damaged or "
                          "edited); write it again with fedloom partition --out")
    same_test = part.num_clients > 1 and all(np.array_equal(t, part.test[0]) for t in part.test[1:])
    return (part.train, part.test), "global" if same_test else "per-client"


def _check_manifest(path: Path, info: dict[str, Any], dataset: str, pooled: PooledDataset) -> None:
    from fedloom.registry import canonical

    where = f"--partition-file {path}"
    if canonical(str(info["dataset"])) != canonical(dataset):
        raise ConfigError(f"{where} was made for dataset '{info['dataset']}', not '{dataset}'; "
                          f"use --dataset {info['dataset']}")
    if int(info["dataset_size"]) != len(pooled):
        raise ConfigError(f"{where} indexes a '{info['dataset']}' of {info['dataset_size']} samples, but it "
                          f"loads with {len(pooled)} here (other dataset options or files?)")
    expected = info.get("labels_sha256")
    if expected and expected != labels_sha256(pooled.y.cpu().numpy()):
        raise ConfigError(f"{where}: the labels of '{dataset}' here differ from those the file was made on "
                          "(same size, different order or files)")


def _check_indices(where: str, part: PartitionFile, size: int) -> None:
    """Indices in range, no sample owned twice (a shared global test set excepted), a train sample each."""
    empty = [i for i, t in enumerate(part.train) if len(t) == 0]
    if empty:
        raise ConfigError(f"{where}: client(s) {empty[:5]} have no training sample")
    everything = np.concatenate(part.train + part.test)
    if everything.size and (everything.min() < 0 or everything.max() >= size):
        raise ConfigError(f"{where}: indices must be in [0, {size}); found {everything.min()}..{everything.max()}")
    shared_test = part.num_clients > 1 and all(np.array_equal(t, part.test[0]) for t in part.test[1:])
    owned = np.concatenate(part.train + ([part.test[0]] if shared_test else part.test))
    if len(np.unique(owned)) != len(owned):
        raise ConfigError(f"{where}: some samples belong to more than one client (or twice to one)")


# ------------------------------------------------------------------------------------------------ PFLlib
PFLLIB_PARTITIONS = {"dirichlet": "dir", "pathological": "pat"}  # PFLlib's names for the two it implements


def is_pfllib_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (path / "train").is_dir()


def export_pfllib(fd: "FederatedData", out: Path, batch_size: int = 10) -> Path:
    """Write ``fd``'s clients in PFLlib's layout (config.json, train/{i}.npz, test/{i}.npz) into ``out``."""
    out = Path(out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    x, y = fd.dataset.x.cpu().numpy(), fd.dataset.y.cpu().numpy()
    statistic = []
    for i, (tr, te) in enumerate(zip(fd.train_idx, fd.test_idx)):
        for folder, idx in (("train", tr.cpu().numpy()), ("test", te.cpu().numpy())):
            with open(out / folder / f"{i}.npz", "wb") as handle:
                np.savez_compressed(handle, data={"x": x[idx], "y": y[idx]})
        owned = np.concatenate([tr.cpu().numpy(), te.cpu().numpy()]) if fd.test_split != "global" else \
            tr.cpu().numpy()
        labels, counts = np.unique(y[owned], return_counts=True)
        statistic.append([[int(a), int(b)] for a, b in zip(labels, counts)])
    spec = fd.partition
    config = {"num_clients": fd.num_clients, "num_classes": fd.num_classes, "non_iid": spec.name != "iid",
              "balance": bool(spec.balanced) if spec.name == "pathological" else spec.name == "iid",
              "partition": PFLLIB_PARTITIONS.get(spec.name, spec.name),
              "Size of samples for labels in clients": statistic, "alpha": spec.alpha, "batch_size": batch_size,
              "fedloom": {"dataset": fd.dataset.name, "partition_hash": fd.partition_hash,
                          "partition": dataclasses.asdict(spec), "train_ratio": fd.train_ratio,
                          "test_split": fd.test_split}}
    (out / "config.json").write_text(json.dumps(config, default=str))
    return out


def read_pfllib(path: Path) -> tuple[dict[str, Any], list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """config.json and every client's train and test arrays (``{"x", "y"}``) of a PFLlib folder."""
    try:
        config = json.loads((path / "config.json").read_text())
        clients = int(config["num_clients"])
        train = [_pfllib_arrays(path / "train" / f"{i}.npz") for i in range(clients)]
        test = [_pfllib_arrays(path / "test" / f"{i}.npz") for i in range(clients)]
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable PFLlib folder ({type(exc).__name__}: {exc})") from None
    return config, train, test


def _pfllib_arrays(file: Path) -> dict[str, np.ndarray]:
    with np.load(file, allow_pickle=True) as z:  # PFLlib pickles a dict: its format, not our choice
        data = z["data"].tolist()
    return {"x": np.asarray(data["x"]), "y": np.asarray(data["y"]).astype(np.int64).reshape(-1)}


def import_pfllib(path: Path, pooled: PooledDataset) -> PartitionFile:
    """A PFLlib folder as indices into ``pooled``: each of its samples is found in ``pooled`` (same inputs and
    label; repeated samples take distinct indices)."""
    config, train, test = read_pfllib(path)
    parts = train + test
    x = np.concatenate([p["x"] for p in parts]) if parts else np.zeros((0,))
    y = np.concatenate([p["y"] for p in parts]) if parts else np.zeros(0, np.int64)
    px, py = pooled.x.cpu().numpy(), pooled.y.cpu().numpy()
    if x.shape[1:] != px.shape[1:]:
        raise ConfigError(f"--partition-file {path}: its samples have shape {x.shape[1:]}, dataset "
                          f"'{pooled.name}' has {px.shape[1:]}; use the dataset it was made from")
    index = match_rows(px, py, x.astype(px.dtype), y)
    missing = int((index < 0).sum())
    if missing:
        raise ConfigError(f"--partition-file {path}: {missing} of its {len(y)} samples are not in '{pooled.name}' "
                          "as fedloom loads it (another dataset, or other preprocessing/normalization)")
    sizes = np.cumsum([0] + [len(p["y"]) for p in parts])
    cut = [index[a:b] for a, b in zip(sizes[:-1], sizes[1:])]
    n = len(train)
    info = {"dataset": pooled.name, "dataset_size": len(pooled), "source": "pfllib", "pfllib_config": config}
    return PartitionFile(info, cut[:n], cut[n:])


def _row_hash(x: np.ndarray, y: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """A 64-bit hash of each (input, label) row: a random linear form of the raw bits, wrapping mod 2**64."""
    bits = np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)
    weights = np.random.default_rng(0).integers(1, 2 ** 63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(x), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(x), chunk):
            block = bits[start:start + chunk].astype(np.uint64)
            out[start:start + chunk] = (block * weights).sum(axis=1) ^ (y[start:start + chunk].astype(np.uint64)
                                                                         * np.uint64(0x9E3779B97F4A7C15))
    return out


def match_rows(px: np.ndarray, py: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each row of (x, y) an index into (px, py) holding the same row, -1 where there is none; the k-th
    occurrence of a repeated row takes the k-th matching index, so no index is used twice."""
    if len(y) == 0:
        return np.zeros(0, np.int64)
    ph, qh = _row_hash(px, py), _row_hash(x, y)
    porder = np.argsort(ph, kind="stable")
    psorted = ph[porder]
    qorder = np.argsort(qh, kind="stable")
    qsorted = qh[qorder]
    first_of_run = np.searchsorted(qsorted, qsorted, side="left")
    rank = np.arange(len(qsorted)) - first_of_run  # occurrence number among equal hashes
    start = np.searchsorted(psorted, qsorted, side="left")
    available = np.searchsorted(psorted, qsorted, side="right") - start
    found = rank < available
    result = np.full(len(y), -1, dtype=np.int64)
    result[qorder[found]] = porder[start[found] + rank[found]]
    hit = result >= 0  # a hash match is a candidate: confirm it on the data itself
    same = np.zeros(len(y), dtype=bool)
    same[hit] = (py[result[hit]] == y[hit]) & np.all(
        px[result[hit]].reshape(hit.sum(), -1) == x[hit].reshape(hit.sum(), -1), axis=1)
    result[~same] = -1
    return result


# ------------------------------------------------------------------------------------------------ config
def partition_name(cfg: Any, default: str) -> str:
    """The run's partitioner name: 'file' with --partition-file (which must exist, and not come with another
    partitioner), else --partition or the dataset's default."""
    from fedloom.registry import canonical

    if not cfg.partition_file:
        if cfg.partition and canonical(cfg.partition) == "file":
            raise ConfigError("--partition file reads its clients from --partition-file FILE; give that flag")
        return cfg.partition or default
    path = Path(cfg.partition_file).expanduser()
    if not path.exists():
        raise ConfigError(f"--partition-file {cfg.partition_file}: no such file or folder")
    if cfg.partition and canonical(cfg.partition) != "file":
        raise ConfigError(f"--partition-file gives the clients, so --partition {cfg.partition} would be ignored; "
                          "drop --partition")
    return "file"
