"""Client-state stores: memory, disk (atomic, reduced precision) and the choice between them."""

from pathlib import Path

import torch

from fedloom.engines.state_store import DiskStore, InMemoryStore, ReducedPrecisionMemoryStore, make_store

from engine_helpers import max_param_diff, run_records
from helpers import make_experiment


def state() -> dict:
    return {"params": {"w": torch.linspace(-1, 1, 12).reshape(3, 4)}, "alpha": torch.tensor(0.3),
            "count": torch.tensor([1, 2], dtype=torch.int64)}


def test_disk_store_round_trips_and_writes_atomically(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "states")
    assert store.load(7) is None and list(store.client_ids()) == []
    store.save(7, state())
    store.save(1234, state())
    loaded = store.load(7)
    assert torch.equal(loaded["params"]["w"], state()["params"]["w"]) and loaded["count"].dtype == torch.int64
    assert list(store.client_ids()) == [7, 1234]
    assert not list((tmp_path / "states").rglob("*.tmp"))  # no temporary files left behind
    assert list(DiskStore(tmp_path / "states").client_ids()) == [7, 1234]  # a new store finds them
    store.save(7, None)
    assert store.load(7) is None and 7 not in store


def test_reduced_precision_stores_keep_bfloat16_and_return_float32(tmp_path: Path) -> None:
    for store in (DiskStore(tmp_path / "bf16", dtype="bfloat16"), ReducedPrecisionMemoryStore("bfloat16")):
        store.save(0, state())
        loaded = store.load(0)
        assert loaded["params"]["w"].dtype == torch.float32
        assert torch.allclose(loaded["params"]["w"], state()["params"]["w"], atol=1e-2)
        assert not torch.equal(loaded["params"]["w"], state()["params"]["w"])  # precision was really reduced
    size16 = (tmp_path / "bf16" / "00000" / "0.pt").stat().st_size
    DiskStore(tmp_path / "f32").save(0, {"w": torch.zeros(1000)})
    DiskStore(tmp_path / "b16", dtype="bfloat16").save(0, {"w": torch.zeros(1000)})
    assert (tmp_path / "b16" / "00000" / "0.pt").stat().st_size < (tmp_path / "f32" / "00000" / "0.pt").stat().st_size
    assert size16 > 0


def test_auto_store_goes_to_disk_only_when_states_would_not_fit(tmp_path: Path) -> None:
    small = make_store("auto", "float32", tmp_path, "cpu", state_bytes=1000, num_clients=10, memory_budget=10**6)
    big = make_store("auto", "float32", tmp_path, "cpu", state_bytes=10**6, num_clients=10, memory_budget=10**6)
    assert isinstance(small, InMemoryStore) and isinstance(big, DiskStore)


def test_a_run_with_a_disk_store_equals_the_memory_store(tmp_path: Path) -> None:
    memory = make_experiment(algorithm="local", clients=4)
    disk = make_experiment(algorithm="local", clients=4, store="disk", store_dir=str(tmp_path / "s"))
    assert isinstance(disk.runtime.store, DiskStore)
    a, _ = run_records(memory, 2)
    b, _ = run_records(disk, 2)
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
    assert len(list((tmp_path / "s").rglob("*.pt"))) == 4
    for cid in range(4):
        assert max_param_diff(memory.runtime.store.load(cid)["params"], disk.runtime.store.load(cid)["params"]) == 0
