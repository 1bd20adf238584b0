"""The processes engine: N worker processes, one torch thread each, clients sticky to workers.

Clients are assigned once, longest-processing-time first by expected work (train samples × local epochs), so
workers are balanced and a client's state never moves: each worker owns its clients' states in its own store.
Every round the main process sends the broadcast and each worker's share of the cohort; a worker trains its
clients (serially or vectorized inside) and sends back one pre-reduced partial sum (Σ weight·upload, Σ weight)
rather than every upload, unless the algorithm needs every upload (aggregation = "all"). Evaluation runs in
the workers too, each on its own clients. Workers are started with ``spawn`` and rebuild data, model and
algorithm from the resolved run config, as a worker on another machine would.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any, Iterable, Iterator, Optional

import torch

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.algorithms.uploads import Uploads, merge_uploads
from fedloom.engines.base import ENGINES, CohortResult, Engine, EngineOptions
from fedloom.engines.context import Runtime
from fedloom.engines.worker import SAME_BROADCAST, raise_remote, worker_main
from fedloom.errors import TrainingError


def assign_clients(work: list[float], workers: int) -> list[list[int]]:
    """Longest-processing-time-first: each client, heaviest first, goes to the least-loaded worker."""
    loads = [0.0] * workers
    owned: list[list[int]] = [[] for _ in range(workers)]
    for client in sorted(range(len(work)), key=lambda c: (-work[c], c)):
        target = min(range(workers), key=lambda w: (loads[w], w))
        owned[target].append(client)
        loads[target] += work[client]
    return [sorted(clients) for clients in owned]


@ENGINES.register("processes")
class ProcessEngine(Engine):
    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        super().__init__(runtime, options)
        if self.options.run_config is None:
            raise ValueError("the processes engine needs EngineOptions.run_config to start its workers")
        data = runtime.data
        work = [float(idx.numel() * runtime.sgd.epochs) for idx in data.train_idx]
        count = max(1, min(self.options.workers, data.num_clients))
        self.owned = assign_clients(work, count)
        self.owner = {client: w for w, clients in enumerate(self.owned) for client in clients}
        self.connections: list[Connection] = []
        self.processes: list[Any] = []
        self._last_sent: dict[int, tuple[Broadcast, list[int]]] = {}  # per worker: (broadcast, its clients)
        self._start(count)

    def _start(self, count: int) -> None:
        context = mp.get_context("spawn")
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, name=f"fedloom-worker-{index}", daemon=True,
                                      args=(child, self.options.run_config, self.options.worker_engine,
                                            self.options))
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
        for index in range(count):  # wait until every worker has built its data and model
            self._receive(index)

    # ------------------------------------------------------------------ messaging
    def _send(self, index: int, command: str, payload: Any = None) -> None:
        try:
            self.connections[index].send((command, payload))
        except (BrokenPipeError, OSError):
            self._dead(index)

    def _receive(self, index: int) -> Any:
        try:
            status, payload = self.connections[index].recv()
        except (EOFError, OSError):
            self._dead(index)
        if status == "error":
            raise_remote(payload, index)
        return payload

    def _dead(self, index: int) -> None:
        process = self.processes[index]
        process.join(timeout=1)
        raise TrainingError(f"worker {index} died unexpectedly (exit code {process.exitcode}); "
                            f"see the messages above, or run with --engine serial to debug")

    def _scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        """Send every worker its share, then collect the replies (workers compute concurrently)."""
        for index, share in shares.items():
            self._send(index, command, share)
        return {index: self._receive(index) for index in shares}

    def _shares(self, clients: Iterable[int]) -> dict[int, list[int]]:
        shares: dict[int, list[int]] = {}
        for client in clients:
            shares.setdefault(self.owner[client], []).append(client)
        return shares

    def _wire(self, index: int, broadcast: Broadcast, clients: list[int]) -> Broadcast | str:
        """What to send worker ``index`` as the broadcast: SAME_BROADCAST when it already holds it (the
        evaluation after a server step and the next round's training share one broadcast), so each broadcast
        is pickled once per worker rather than twice."""
        last = self._last_sent.get(index)
        if last is not None and last[0] is broadcast and (broadcast.personal is None or last[1] == clients):
            return SAME_BROADCAST
        self._last_sent[index] = (broadcast, list(clients))
        return _for_clients(broadcast, clients)

    # ------------------------------------------------------------------ engine interface
    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        shares = {w: (algorithm, self._wire(w, broadcast, clients), clients, round_)
                  for w, clients in self._shares(cohort).items()}
        replies = self._scatter("train", shares)
        uploads: list[Uploads] = [replies[w]["uploads"] for w in sorted(replies)]
        metrics: dict[int, dict[str, float]] = {}
        for w in sorted(replies):
            metrics.update(replies[w]["metrics"])
        return CohortResult(merge_uploads(uploads, keep_all=algorithm.aggregation == "all"),
                            dict(sorted(metrics.items())), sum(r["bytes_up"] for r in replies.values()))

    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        shares = {w: (algorithm, self._wire(w, broadcast, owned), owned, round_, split)
                  for w, owned in self._shares(clients).items()}
        results: dict[int, dict[str, float]] = {}
        for reply in self._scatter("evaluate", shares).values():
            results.update(reply)
        return dict(sorted(results.items()))

    def client_states(self) -> Iterator[tuple[int, Tree]]:
        states: list[tuple[int, Tree]] = []
        for reply in self._scatter("states", {w: None for w in range(len(self.connections))}).values():
            states.extend(reply)
        return iter(sorted(states, key=lambda item: item[0]))

    def restore_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        shares: dict[int, list[tuple[int, Tree]]] = {w: [] for w in range(len(self.connections))}
        for client, state in states:
            shares[self.owner[client]].append((client, state))
        self._scatter("restore", shares)

    def close(self) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive():
                try:
                    self.connections[index].send(("stop", None))
                except (BrokenPipeError, OSError):
                    pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
        self.processes, self.connections = [], []

    def __del__(self) -> None:  # a run that raised still stops its workers
        if getattr(self, "processes", None):
            self.close()


def _for_clients(broadcast: Broadcast, clients: list[int]) -> Broadcast:
    """Only the personal downloads of these clients cross to their worker."""
    if broadcast.personal is None:
        return broadcast
    return Broadcast(broadcast.params, broadcast.extra, {c: broadcast.personal[c] for c in clients
                                                         if c in broadcast.personal})
