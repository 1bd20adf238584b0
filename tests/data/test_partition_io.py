"""Partition files (clients.npz / .json) and PFLlib's per-client layout: round trips and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedloom.cli import main
from fedloom.data.base import PartitionSpec
from fedloom.data.federated import FederatedData, build_federated_data
from fedloom.data.partition_io import (export_pfllib, match_rows, read_partition_file, write_partition_file)
from fedloom.errors import ConfigError


@pytest.fixture(scope="module")
def fd(tmp_path_factory: pytest.TempPathFactory) -> FederatedData:
    return build_federated_data("digits", {}, PartitionSpec("dirichlet", 6, alpha=0.3),
                                cache_dir=tmp_path_factory.mktemp("cache"))


def rebuild(path: Path, clients: int = 6, dataset: str = "digits") -> FederatedData:
    return build_federated_data(dataset, {}, PartitionSpec("file", clients), partition_file=path)


def same_clients(a: FederatedData, b: FederatedData) -> bool:
    return all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.train_idx + a.test_idx, b.train_idx + b.test_idx))


@pytest.mark.parametrize("name", ["clients.npz", "clients.json"])
def test_partition_file_round_trip_keeps_every_index_and_the_hash(fd: FederatedData, tmp_path: Path,
                                                                   name: str) -> None:
    path = write_partition_file(fd, tmp_path / name, "digits", {}, 0)
    back = rebuild(path)
    assert same_clients(fd, back) and back.partition_hash == fd.partition_hash
    assert back.partition.name == "file" and back.test_split == "per-client"
    info = read_partition_file(path).manifest
    assert info["dataset"] == "digits" and info["dataset_size"] == 1797 and info["num_clients"] == 6
    assert info["partition"]["alpha"] == 0.3 and info["partition_hash"] == fd.partition_hash


def test_npz_layout_is_offsets_into_one_index_array(fd: FederatedData, tmp_path: Path) -> None:
    path = write_partition_file(fd, tmp_path / "clients.npz", "digits", {}, 0)
    with np.load(path, allow_pickle=False) as z:  # readable without pickle, by any NumPy program
        offsets, flat = z["train_offsets"], z["train_indices"]
        assert offsets.tolist() == [0, *np.cumsum(fd.train_sizes()).tolist()]
        assert np.array_equal(flat[offsets[2]:offsets[3]], fd.train_idx[2].numpy())
        assert json.loads(str(z["manifest"]))["format"] == "fedloom-partition"


def test_global_test_split_is_recognised_from_the_file(tmp_path: Path) -> None:
    glob = build_federated_data("digits", {}, PartitionSpec("iid", 4), test_split="global", cache_dir=tmp_path)
    back = rebuild(write_partition_file(glob, tmp_path / "g.npz", "digits", {}, 0), clients=4)
    assert back.test_split == "global" and back.partition_hash == glob.partition_hash


def _edit(path: Path, **changes: object) -> Path:
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if key in ("train", "test"):
            raw[key] = value
        else:
            raw["manifest"][key] = value
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("change, clients, message", [
    ({"dataset": "mnist-5k"}, 6, "was made for dataset 'mnist-5k', not 'digits'"),
    ({"dataset_size": 1000}, 6, "of 1000 samples, but it loads with 1797"),
    ({"labels_sha256": "0" * 64}, 6, "labels of 'digits' here differ"),
    ({}, 5, "holds 6 clients but the run has 5; use --clients 6"),
    ({"partition_hash": "f" * 64}, 6, "do not match the manifest's partition_hash"),
])
def test_a_file_for_another_dataset_or_run_is_refused_with_one_line(fd: FederatedData, tmp_path: Path,
                                                                   change: dict, clients: int, message: str) -> None:
    path = _edit(write_partition_file(fd, tmp_path / "c.json", "digits", {}, 0), **change)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        rebuild(path, clients=clients)


def test_bad_indices_are_refused(fd: FederatedData, tmp_path: Path) -> None:
    path = write_partition_file(fd, tmp_path / "c.json", "digits", {}, 0)
    raw = json.loads(path.read_text())
    raw["manifest"].pop("partition_hash")  # so that the index checks, not the hash, speak
    for train, message in [([[5000]] + raw["train"][1:], r"indices must be in \[0, 1797\)"),
                           ([raw["train"][1]] + raw["train"][1:], "more than one client"),
                           ([[]] + raw["train"][1:], r"client\(s\) \[0\] have no training sample")]:
        path.write_text(json.dumps({**raw, "train": train}))
        with pytest.raises(ConfigError, match=message):
            rebuild(path)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="is not a fedloom partition file"):
        rebuild(path)


def test_match_rows_by_hand_with_repeats_and_a_missing_row() -> None:
    px = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0]], dtype=np.float32)
    py = np.array([0, 1, 0, 1])
    x = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [5.0, 6.0], [3.0, 4.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 0, 0])
    # repeats take distinct indices in order; (5,6) with label 0 and a third (1,2) do not exist
    assert match_rows(px, py, x, y).tolist() == [0, 2, 1, 3, -1, -1]


def test_pfllib_export_layout_and_import_round_trip(fd: FederatedData, tmp_path: Path) -> None:
    out = export_pfllib(fd, tmp_path / "pfl", batch_size=10)
    config = json.loads((out / "config.json").read_text())
    assert config["num_clients"] == 6 and config["num_classes"] == 10 and config["partition"] == "dir"
    assert config["non_iid"] is True and config["alpha"] == 0.3 and config["batch_size"] == 10
    stats = config["Size of samples for labels in clients"]
    assert [sum(n for _, n in s) for s in stats] == (fd.train_sizes() + fd.test_sizes()).tolist()
    # read exactly as PFLlib's read_data does: a pickled dict under "data"
    data = np.load(out / "train" / "2.npz", allow_pickle=True)["data"].tolist()
    idx = fd.train_idx[2].numpy()
    assert np.array_equal(data["x"], fd.dataset.x.numpy()[idx]) and np.array_equal(data["y"], fd.dataset.y.numpy()[idx])
    back = rebuild(out)
    assert back.partition_hash == fd.partition_hash and same_clients(fd, back)


def test_pfllib_folder_of_another_dataset_is_refused(fd: FederatedData, tmp_path: Path) -> None:
    out = export_pfllib(fd, tmp_path / "pfl")
    data = np.load(out / "test" / "0.npz", allow_pickle=True)["data"].tolist()
    data["x"] = data["x"] * 0.5  # other preprocessing: no sample of it is in fedloom's digits
    with open(out / "test" / "0.npz", "wb") as handle:
        np.savez_compressed(handle, data=data)
    with pytest.raises(ConfigError, match=f"{len(data['y'])} of its 1797 samples are not in 'digits'"):
        rebuild(out)


def test_cli_writes_clients_npz_and_a_run_uses_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    part = ["--dataset", "digits", "--partition", "pathological", "--clients", "4", "--cache-dir", str(tmp_path)]
    assert main(["partition", *part, "--out", str(tmp_path / "p"), "--pfllib", str(tmp_path / "pfl")]) == 0
    hash_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("partition hash"))
    for source in (tmp_path / "p" / "clients.npz", tmp_path / "pfl"):
        run = ["run", "--dataset", "digits", "--partition-file", str(source), "--clients", "4", "--rounds", "1",
               "--quiet", "--out", str(tmp_path / "run"), "--overwrite", "--cache-dir", str(tmp_path)]
        assert main(run) == 0
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["partition"] == "file" and summary["partition_hash"] == hash_line.split()[-1]
    capsys.readouterr()
    assert main(["run", "--dataset", "digits", "--partition", "iid", "--partition-file", str(tmp_path / "pfl"),
                 "--clients", "4", "--rounds", "1", "--quiet", "--out", str(tmp_path / "r2")]) == 2
    assert "drop --partition" in capsys.readouterr().err


def test_pfllib_dataset_trains_on_the_folders_own_arrays_like_fedloom(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    part = ["--dataset", "digits", "--partition", "dirichlet", "--clients", "3", "--cache-dir", str(tmp_path)]
    assert main(["partition", *part, "--pfllib", str(tmp_path / "pfl")]) == 0
    common = ["--clients", "3", "--rounds", "2", "--quiet", "--model", "logreg", "--cache-dir", str(tmp_path)]
    assert main(["run", "--dataset", "digits", "--partition-file", str(tmp_path / "pfl"), *common,
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["run", "--dataset", "pfllib", "--data-dir", str(tmp_path / "pfl"), "--partition-file",
                 str(tmp_path / "pfl"), *common, "--out", str(tmp_path / "b")]) == 0
    accuracy = [[json.loads(line)["accuracy"] for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
                for r in ("a", "b")]
    assert accuracy[0] == accuracy[1]  # the same samples per client, in the same order: the same run
    capsys.readouterr()
    assert main(["run", "--dataset", "pfllib", *common, "--out", str(tmp_path / "c")]) == 2
    assert "--dataset pfllib reads a PFLlib folder" in capsys.readouterr().err
