"""Client-state stores, owned by the engine.

An algorithm's per-client memory (a personal model, a head, control variates) lives here between rounds, never
in client objects. Only the sampled cohort's states are loaded each round. ``InMemoryStore`` keeps tensors in a
dict; a disk-backed store implements the same four methods.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_clone, tree_map
from fedloom.errors import DataError

STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ClientStateStore(ABC):
    @abstractmethod
    def load(self, client_id: int) -> Optional[Tree]:
        """The saved state, or None if the client has none yet."""

    @abstractmethod
    def save(self, client_id: int, state: Optional[Tree]) -> None:
        """Replace the client's state (None deletes it)."""

    @abstractmethod
    def client_ids(self) -> Iterator[int]:
        """Clients that have a saved state."""

    def __contains__(self, client_id: int) -> bool:
        return client_id in set(self.client_ids())

    @abstractmethod
    def clear(self) -> None:
        """Forget every state (a fresh start, or before restoring a checkpoint's states exactly)."""

    def discard(self) -> None:
        """Release what the store holds once the run is complete (a disk store removes its folder)."""
        self.clear()


class InMemoryStore(ClientStateStore):
    def __init__(self) -> None:
        self._states: dict[int, Tree] = {}

    def load(self, client_id: int) -> Optional[Tree]:
        return self._states.get(client_id)

    def save(self, client_id: int, state: Optional[Tree]) -> None:
        if state is None:
            self._states.pop(client_id, None)
        else:
            # detach from any autograd graph; tensors are not shared with the caller's later edits
            self._states[client_id] = tree_clone(state)

    def client_ids(self) -> Iterator[int]:
        return iter(sorted(self._states))

    def __contains__(self, client_id: int) -> bool:
        return client_id in self._states

    def clear(self) -> None:
        self._states.clear()


class DiskStore(ClientStateStore):
    """One ``torch.save`` file per client under ``root``; floating tensors stored as ``dtype``.

    Writes go to a temporary file in the same folder and are renamed into place, so a crash never leaves a
    half-written state. Loading casts floating tensors back to float32 on ``device``. The folder itself is the
    index (no cached list of clients): the processes engine's workers share one folder, and a ``clear`` by the
    main process before a resume must be seen by all of them.
    """

    def __init__(self, root: Path, dtype: str = "float32", device: torch.device | str = "cpu") -> None:
        self.root = Path(root)  # created on the first save, so an unused store leaves no folder behind
        self.dtype = STORAGE_DTYPES[dtype]
        self.device = torch.device(device)

    def path(self, client_id: int) -> Path:
        return self.root / f"{client_id // 1000:05d}" / f"{client_id}.pt"

    def load(self, client_id: int) -> Optional[Tree]:
        path = self.path(client_id)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location=self.device, weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            raise DataError(f"cannot read the state of client {client_id} from {path}: {exc}") from None
        return tree_map(lambda t: t.float() if t.is_floating_point() else t, stored)

    def save(self, client_id: int, state: Optional[Tree]) -> None:
        path = self.path(client_id)
        if state is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = tree_map(lambda t: t.detach().to("cpu", self.dtype if t.is_floating_point() else t.dtype)
                          .contiguous(), state)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(stored, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def client_ids(self) -> Iterator[int]:
        return iter(sorted(int(p.stem) for p in self.root.glob("*/*.pt") if p.stem.isdigit()))

    def __contains__(self, client_id: int) -> bool:
        return self.path(client_id).is_file()

    def clear(self) -> None:
        for shard in self.root.glob("[0-9]*"):
            if shard.is_dir():
                shutil.rmtree(shard, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class ReducedPrecisionMemoryStore(InMemoryStore):
    """In memory, with floating tensors kept as ``dtype`` (e.g. bfloat16 halves the memory)."""

    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.dtype = STORAGE_DTYPES[dtype]

    def load(self, client_id: int) -> Optional[Tree]:
        state = super().load(client_id)
        return None if state is None else tree_map(lambda t: t.float() if t.is_floating_point() else t, state)

    def save(self, client_id: int, state: Optional[Tree]) -> None:
        if state is not None:
            state = tree_map(lambda t: t.detach().to(self.dtype) if t.is_floating_point() else t, state)
        super().save(client_id, state)


def make_store(kind: str, dtype: str, root: Path, device: torch.device | str, state_bytes: int,
               num_clients: int, memory_budget: int) -> ClientStateStore:
    """``kind`` memory | disk | auto: auto uses disk when every client keeping a state of ``state_bytes``
    would exceed ``memory_budget`` bytes."""
    if kind == "auto":
        kind = "disk" if state_bytes * num_clients > memory_budget else "memory"
    if kind == "disk":
        return DiskStore(root, dtype, device)
    return InMemoryStore() if dtype == "float32" else ReducedPrecisionMemoryStore(dtype)
