"""Round-staged client states for the Ray engine's workers, so that a worker lost mid-round can have its clients
re-run elsewhere from the states of the start of the round (fault tolerance of FedML Parrot's sequential
training, Tang et al., arXiv 2303.01778, 2023, on Ray's actor model, Moritz et al., OSDI 2018).

A worker's store (``StagedStore``) keeps the states of the start of the round untouched while the round trains:
the new states go to a staging area and replace them only when the engine commits the round, after every
contribution of the round is safe. A re-run of a lost worker's client, wherever it runs, therefore starts from
the state the lost worker started from, and, every draw coming from (seed, round, client, purpose), ends in the
same upload and the same new state.

Staging follows the store:
- a disk store stages each new state as a file under ``<root>/.pending/r<round>-w<worker>/`` (same dtype and
  layout as the store's own files). The commit writes a ``COMMITTED`` journal (the clients whose states were
  deleted) and then renames the files into place; a worker lost during its commit is rolled forward by any
  worker that can read the folder (``roll_forward``), one lost before it leaves the start-of-round files intact
  and its pending folder is removed;
- a memory store stages in memory (states of this worker's share of the cohort only); the engine keeps a copy of
  every committed state at the driver (``commit(backup=True)`` returns them), since a memory store dies with its
  process.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

from fedloom.algorithms.tree import Tree
from fedloom.engines.state_store import ClientStateStore, DiskStore, InMemoryStore, ReducedPrecisionMemoryStore

PENDING = ".pending"
JOURNAL = "COMMITTED"


def pending_root(root: Path, round_: int, worker: int) -> Path:
    """Where worker ``worker`` stages the new states of round ``round_`` of the disk store at ``root``."""
    return Path(root) / PENDING / f"r{round_}-w{worker}"


class StagedStore(ClientStateStore):
    """A worker's store whose writes during a round (``begin``) are staged until ``commit``; outside a round
    (evaluation, checkpoints, restores) it is the store it wraps."""

    def __init__(self, base: ClientStateStore, worker: int) -> None:
        self.base, self.worker = base, worker
        self.round: Optional[int] = None
        self.staged: Optional[ClientStateStore] = None
        self.deleted: set[int] = set()

    @property
    def on_disk(self) -> bool:
        return isinstance(self.base, DiskStore)

    # ------------------------------------------------------------------ the round
    def begin(self, round_: int) -> None:
        """Stage the writes of round ``round_`` (a second call in the same round, a re-run, keeps what is staged;
        what an abandoned round staged is dropped)."""
        if self.round == round_:
            return
        self.abandon()
        self.round = round_
        self.staged = self._staging(round_)

    def _staging(self, round_: int) -> ClientStateStore:
        base = self.base
        if isinstance(base, DiskStore):
            root = pending_root(base.root, round_, self.worker)
            shutil.rmtree(root, ignore_errors=True)  # left by a crashed attempt of this run (before a resume)
            return DiskStore(root, _dtype_name(base), base.device)
        if isinstance(base, ReducedPrecisionMemoryStore):  # the same rounding as a direct save
            return ReducedPrecisionMemoryStore(_dtype_name(base))
        return InMemoryStore()

    def commit(self, backup: bool = False) -> dict[int, Optional[Tree]]:
        """The staged states replace the saved ones; with ``backup``, the committed states (None: deleted) come
        back for the driver's copy."""
        if self.staged is None:
            return {}
        staged, deleted = list(self.staged.client_ids()), sorted(self.deleted)
        copies = {c: self.staged.load(c) for c in staged} if backup else {}
        if self.on_disk:
            root = self.staged.root
            root.mkdir(parents=True, exist_ok=True)
            _write_atomic(root / JOURNAL, json.dumps({"deleted": deleted}))
            roll_forward(self.base, root)
        else:
            for client in staged:
                self.base.save(client, self.staged.load(client))
            for client in deleted:
                self.base.save(client, None)
        self.round, self.staged, self.deleted = None, None, set()
        return {**copies, **{c: None for c in deleted}} if backup else {}

    def has_staged(self) -> bool:
        """Whether the round wrote anything here (a commit has work to do)."""
        return self.staged is not None and (bool(self.deleted) or next(self.staged.client_ids(), None) is not None)

    def abandon(self) -> None:
        """Drop what is staged (the round will not be committed here)."""
        if isinstance(self.staged, DiskStore):
            self.staged.discard()
        self.round, self.staged, self.deleted = None, None, set()

    # ------------------------------------------------------------------ the store interface
    def load(self, client_id: int) -> Optional[Tree]:
        if self.staged is not None:
            if client_id in self.deleted:
                return None
            if client_id in self.staged:
                return self.staged.load(client_id)
        return self.base.load(client_id)

    def save(self, client_id: int, state: Optional[Tree]) -> None:
        if self.staged is None:
            self.base.save(client_id, state)
            return
        if state is None and client_id not in self.staged and client_id not in self.base:
            return  # a stateless client (FedAvg's): nothing to delete, nothing to commit
        self.staged.save(client_id, state)
        if state is None:
            self.deleted.add(client_id)
        else:
            self.deleted.discard(client_id)

    def client_ids(self) -> Iterator[int]:
        ids = set(self.base.client_ids())
        if self.staged is not None:
            ids = (ids | set(self.staged.client_ids())) - self.deleted
        return iter(sorted(ids))

    def __contains__(self, client_id: int) -> bool:
        if self.staged is not None:
            if client_id in self.deleted:
                return False
            if client_id in self.staged:
                return True
        return client_id in self.base

    def clear(self) -> None:
        self.abandon()
        self.base.clear()

    def discard(self) -> None:
        self.abandon()
        self.base.discard()


def roll_forward(base: DiskStore, root: Path) -> bool:
    """Finish the commit staged at ``root`` if its journal was written (True), else drop it (False): the
    start-of-round files stay. Idempotent, so any worker that can read the folder may run it."""
    journal = root / JOURNAL
    if not journal.is_file():
        shutil.rmtree(root, ignore_errors=True)
        return False
    for staged in sorted(root.glob("*/*.pt")):
        if staged.stem.isdigit():
            target = base.path(int(staged.stem))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)  # atomic: a reader sees the old state or the new one
    for client in json.loads(journal.read_text())["deleted"]:
        base.path(int(client)).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dtype_name(store: ClientStateStore) -> str:
    from fedloom.engines.state_store import STORAGE_DTYPES
    return next(name for name, dtype in STORAGE_DTYPES.items() if dtype == getattr(store, "dtype"))
