"""Round-staged client states of the Ray engine's workers (fedloom.engines.ray_state), without Ray: the states
of the start of a round stay readable until the commit, a commit journal is rolled forward, a commit without one
is dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedloom.engines.ray_state import JOURNAL, StagedStore, pending_root, roll_forward
from fedloom.engines.state_store import DiskStore, InMemoryStore, ReducedPrecisionMemoryStore


def state(value: float) -> dict:
    return {"w": torch.full((3,), value)}


def stores(tmp_path: Path) -> list:
    return [InMemoryStore(), ReducedPrecisionMemoryStore("bfloat16"), DiskStore(tmp_path / "states")]


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_the_start_of_round_states_stay_until_the_commit(tmp_path: Path, kind: int) -> None:
    base = stores(tmp_path)[kind]
    base.save(1, state(1.0))
    base.save(2, state(2.0))
    store = StagedStore(base, worker=0)
    store.begin(5)
    store.save(1, state(10.0))
    store.save(2, None)
    store.save(3, state(3.0))
    # the worker sees its round's writes; the store underneath (what a re-run elsewhere reads) does not
    assert store.load(1)["w"][0] == 10.0 and store.load(2) is None and 2 not in store
    assert list(store.client_ids()) == [1, 3] and store.has_staged()
    assert base.load(1)["w"][0] == 1.0 and base.load(2)["w"][0] == 2.0 and 3 not in base
    copies = store.commit(backup=True)
    assert sorted(copies) == [1, 2, 3] and copies[2] is None and copies[1]["w"][0] == 10.0
    assert base.load(1)["w"][0] == 10.0 and base.load(2) is None and base.load(3)["w"][0] == 3.0
    assert not store.has_staged()
    store.save(4, state(4.0))  # outside a round: straight to the store (restores, updates)
    assert base.load(4)["w"][0] == 4.0


def test_a_rerun_in_the_same_round_keeps_what_was_staged_and_a_new_round_drops_it(tmp_path: Path) -> None:
    base = DiskStore(tmp_path / "states")
    store = StagedStore(base, worker=1)
    store.begin(2)
    store.save(1, state(1.0))
    store.begin(2)  # a lost worker's clients re-run here in the same round
    assert store.load(1)["w"][0] == 1.0
    store.begin(3)  # round 2 was never committed here (abandoned)
    assert store.load(1) is None and not pending_root(base.root, 2, 1).exists()


def test_a_commit_journal_is_rolled_forward_and_a_commit_without_one_is_dropped(tmp_path: Path) -> None:
    base = DiskStore(tmp_path / "states")
    base.save(1, state(1.0))
    base.save(2, state(2.0))
    lost = StagedStore(base, worker=1)
    lost.begin(4)
    lost.save(1, state(10.0))
    lost.save(2, None)
    root = pending_root(base.root, 4, 1)
    assert not roll_forward(base, root)  # no journal: the worker died before committing: start-of-round states
    assert base.load(1)["w"][0] == 1.0 and not root.exists()
    lost.begin(5)
    lost.save(1, state(10.0))
    lost.save(2, None)
    root = pending_root(base.root, 5, 1)
    (root / JOURNAL).write_text('{"deleted": [2]}')  # died after writing its journal, before the renames
    assert roll_forward(base, root) and base.load(1)["w"][0] == 10.0 and base.load(2) is None
    assert not root.exists() and list(base.client_ids()) == [1]


def test_a_stateless_client_stages_nothing(tmp_path: Path) -> None:
    """FedAvg's clients save None: no deletion to commit, so the engine sends no commit for such a round."""
    store = StagedStore(DiskStore(tmp_path / "states"), worker=0)
    store.begin(1)
    store.save(7, None)
    assert not store.has_staged() and store.commit(backup=True) == {}


# ------------------------------------------------------------------ where a lost worker's states go (no Ray)
class _Call:
    def __init__(self, value: object) -> None:
        self.value = value

    def remote(self, *args: object) -> object:
        return self.value(*args) if callable(self.value) else self.value


class _Actor:
    def __init__(self, sees: bool) -> None:
        self.adopted: list = []
        self.sees = _Call(sees)
        self.roll_forward = _Call(False)
        self.adopt = _Call(lambda states: self.adopted.extend(states))


class _Transport:
    def __init__(self, actors: dict) -> None:
        self.actors = actors

    def get(self, ref: object, index: int) -> object:
        return ref

    def kill(self, index: int) -> None:
        self.actors.pop(index)

    def close(self) -> None:
        self.actors.clear()


def _engine(backup: bool, sees: bool, tmp_path: Path):
    from types import SimpleNamespace
    from fedloom.engines.ray_engine import RayEngine

    engine = object.__new__(RayEngine)  # the recovery logic only, over fake actors
    engine.transport = _Transport({w: _Actor(sees) for w in range(3)})
    engine.alive, engine.backup, engine.recoveries = [0, 1, 2], backup, []
    engine.pinned, engine.owner = {4: 1, 5: 1, 6: 0}, {4: 1, 5: 1, 6: 0, 7: 1}
    engine.saved = {4: state(4.0), 5: state(5.0), 6: state(6.0)}
    engine.options = SimpleNamespace(run_config=SimpleNamespace(checkpoint_every=2, out=str(tmp_path / "run")))
    return engine


def test_a_lost_workers_states_go_to_survivors_from_the_drivers_copy(tmp_path: Path) -> None:
    engine = _engine(backup=True, sees=False, tmp_path=tmp_path)
    actors = dict(engine.transport.actors)
    engine._recover([1], [4], round_=3)
    adopted = {c: s["w"][0].item() for w in (0, 2) for c, s in actors[w].adopted}
    assert adopted == {4: 4.0, 5: 5.0} and {engine.pinned[4], engine.pinned[5]} == {0, 2}
    assert engine.owner[7] in (0, 2) and engine.recoveries[0]["rehomed"] == [4, 5]


def test_disk_states_no_survivor_can_read_end_the_run_with_the_resume_hint(tmp_path: Path) -> None:
    from fedloom.errors import TrainingError

    engine = _engine(backup=False, sees=False, tmp_path=tmp_path)  # a node-local disk died with its node
    with pytest.raises(TrainingError, match=r"clients \[4, 5\] in a disk store no surviving worker can read.*"
                                            r"--store-dir.*--resume"):
        engine._recover([1], [4], round_=3)
    engine = _engine(backup=False, sees=True, tmp_path=tmp_path)  # the same files, seen by the survivors
    engine._recover([1], [4], round_=3)
    assert {engine.pinned[4], engine.pinned[5]} == {0, 2}


def test_files_a_crashed_attempt_staged_are_not_committed_after_a_resume(tmp_path: Path) -> None:
    base = DiskStore(tmp_path / "states")
    crashed = StagedStore(base, worker=0)
    crashed.begin(3)
    crashed.save(8, state(8.0))  # then the driver died; the resumed run's worker 0 reaches round 3 again
    resumed = StagedStore(base, worker=0)
    resumed.begin(3)
    resumed.save(9, state(9.0))
    resumed.commit()
    assert list(base.client_ids()) == [9]
