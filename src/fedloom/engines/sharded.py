"""The sharded engine: clients sticky to N workers, whatever carries the messages to them.

This is the sharding logic, separate from the transport. Clients are assigned once, longest-processing-time
first by expected work (train samples × local epochs), so workers are balanced and a client's state never
moves: each worker owns its clients' states in its own store. Clients that hold no state (FedAvg's, and any
client before its first state exists) are placed per round instead, balancing that round's cohort
(``_placement``); a client's first saved state pins it to the worker that holds it. Every round the engine sends the broadcast and
each worker's share of the cohort; a worker trains its clients (serially or vectorized inside) and sends back
one pre-reduced partial sum (Σ weight·upload, Σ weight) rather than every upload, unless the server step needs
every upload; the partial sums are merged here (``merge_uploads``). Evaluation runs in the workers too, each on
its own clients. A broadcast a worker already holds is not sent again (``_wire``).

A ``Transport`` carries the messages: it starts the workers (each builds its runtime from the resolved run
config with ``worker.ShardWorker``), sends each worker its share and brings back the replies, and stops them.
``transport_mp.MultiprocessingTransport`` (spawned processes, pipes, heartbeats) is the processes engine's; a
Ray engine would be a ShardedEngine with a transport over actors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable, Iterator, Optional

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.algorithms.uploads import Uploads, merge_uploads
from fedloom.config import RunConfig
from fedloom.engines.base import CohortResult, Engine, EngineOptions
from fedloom.engines.context import Runtime
from fedloom.engines.worker import SAME_BROADCAST


class Transport(ABC):
    """How a sharded engine reaches its workers. Worker i serves ``(command, payload)`` messages with a
    ``worker.ShardWorker`` built from the engine options' run config and worker engine; the transport only
    moves messages and watches the workers."""

    @abstractmethod
    def start(self, count: int) -> None:
        """Start workers 0 .. count-1 and return once every one has built its runtime (or raise)."""

    @abstractmethod
    def scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        """Send worker i ``(command, shares[i])`` for every i in ``shares``, all before waiting (the workers
        compute concurrently), and return the replies by worker index. A worker's error is raised here (fedloom
        errors keep their type, see ``worker.raise_remote``); a worker that is lost ends the run with one
        TrainingError (``resume_hint`` says how to go on)."""

    @abstractmethod
    def close(self) -> None:
        """Stop every worker whatever its state and release what the transport holds; safe to call twice."""


def resume_hint(cfg: Optional[RunConfig]) -> str:
    """How to go on after a lost worker (the end of a transport's TrainingError)."""
    if cfg is None:
        return "the run cannot continue"
    if cfg.checkpoint_every:
        return f"the run can be resumed from its last checkpoint with fedloom run --resume {cfg.out}"
    return f"fedloom run --resume {cfg.out} restarts the run (it has no checkpoints: see --checkpoint-every)"


def assign_clients(work: list[float], workers: int) -> list[list[int]]:
    """Longest-processing-time-first: each client, heaviest first, goes to the least-loaded worker."""
    return [sorted(clients) for clients in longest_first(range(len(work)), work, [0.0] * workers)]


def longest_first(clients: Iterable[int], work: list[float], loads: list[float]) -> list[list[int]]:
    """``clients``, heaviest first, each to the least-loaded worker (``loads``: each worker's work so far,
    updated in place); worker i's clients in the order they were placed."""
    owned: list[list[int]] = [[] for _ in loads]
    for client in sorted(clients, key=lambda c: (-work[c], c)):
        target = min(range(len(loads)), key=lambda w: (loads[w], w))
        owned[target].append(client)
        loads[target] += work[client]
    return owned


class ShardedEngine(Engine):
    """Clients sharded over ``options.workers`` workers reached through ``make_transport()``."""

    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        super().__init__(runtime, options)
        if self.options.run_config is None:
            raise ValueError(f"the {getattr(self, 'registry_name', 'sharded')} engine needs EngineOptions.run_config "
                             f"to start its workers")
        data = runtime.data
        self.work = [float(idx.numel() * runtime.sgd.epochs) for idx in data.train_idx]
        count = max(1, min(self.options.workers, data.num_clients))
        self.owned = assign_clients(self.work, count)
        self.owner = {client: w for w, clients in enumerate(self.owned) for client in clients}
        #: clients with a saved state on their owner's store (they train there); the others may train anywhere
        self.holding: set[int] = set()
        self._starts_stateless: dict[int, bool] = {}  # id(algorithm) -> its clients start without a state
        self._last_sent: dict[int, tuple[Broadcast, list[int]]] = {}  # per worker: (broadcast, its clients)
        self.transport: Optional[Transport] = None
        try:
            self.transport = self.make_transport()
            self.transport.start(count)
        except BaseException:  # a worker that failed to start, or Ctrl-C: stop the others now
            self.close()
            raise

    def make_transport(self) -> Transport:
        """The transport of this engine (a subclass's choice)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sharding
    def _scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        return self.transport.scatter(command, shares)

    def _everyone(self) -> range:
        return range(len(self.owned))

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
        return for_clients(broadcast, clients)

    # ------------------------------------------------------------------ engine interface
    def _placement(self, algorithm: Algorithm, cohort: list[int]) -> dict[int, list[int]]:
        """Each worker's share of this round's cohort. A client with a saved state trains where the state lives
        (its owner). Clients without one can train on any worker (every worker holds every client's data), so
        they are balanced over this round's loads, longest first: a sticky split of a random cohort leaves one
        worker ~10% more work at 100 clients per round, and the round waits for it."""
        if not self._balanced(algorithm):
            return self._shares(cohort)
        loads = [0.0 for _ in self._everyone()]
        pinned = [c for c in cohort if c in self.holding]
        for client in pinned:
            loads[self.owner[client]] += self.work[client]
        free = longest_first((c for c in cohort if c not in self.holding), self.work, loads)
        shares = {w: clients + [c for c in pinned if self.owner[c] == w] for w, clients in enumerate(free)}
        return {w: sorted(clients) for w, clients in shares.items() if clients}

    def _balanced(self, algorithm: Algorithm) -> bool:
        """Whether clients without a saved state may move: no stateful upload transform or local-training seam,
        and the algorithm's clients start without a state (a state created later pins its client, see
        ``_note_holding``)."""
        if self.runtime.uploads.stateful or self.runtime.local_training is not None:
            return False
        key = id(algorithm)
        if key not in self._starts_stateless:
            first = next(iter(self.owner))
            initial = algorithm.init_client_state(self.runtime.for_client(first).init_params, first)
            self._starts_stateless[key] = initial is None
        return self._starts_stateless[key]

    def _note_holding(self, worker: int, clients: list[int], holding: Optional[list[int]]) -> None:
        """After worker ``worker`` trained ``clients``: those now holding a state belong to it."""
        if holding is None:
            return
        kept = set(holding)
        for client in clients:
            if client in kept:
                self.holding.add(client)
                self.owner[client] = worker
            else:
                self.holding.discard(client)

    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        placement = self._placement(algorithm, cohort)
        shares = {w: (algorithm, self._wire(w, broadcast, clients), clients, round_)
                  for w, clients in placement.items()}
        replies = self._scatter("train", shares)
        for w, reply in replies.items():
            self._note_holding(w, placement[w], reply.get("holding"))
        uploads: list[Uploads] = [replies[w]["uploads"] for w in sorted(replies)]
        metrics: dict[int, dict[str, float]] = {}
        for w in sorted(replies):
            metrics.update(replies[w]["metrics"])
        return CohortResult(merge_uploads(uploads, keep_all=self.runtime.keep_all(algorithm)),
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
        for reply in self._scatter("states", {w: None for w in self._everyone()}).values():
            states.extend(reply)
        return iter(sorted(states, key=lambda item: item[0]))

    def restore_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        shares: dict[int, list[tuple[int, Tree]]] = {w: [] for w in self._everyone()}
        self.holding.clear()  # a restore replaces every store's contents
        for client, state in states:
            shares[self.owner[client]].append((client, state))
            if state is not None:
                self.holding.add(client)
        self._scatter("restore", shares)

    def update_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        shares: dict[int, list[tuple[int, Tree]]] = {}
        for client, state in states:
            shares.setdefault(self.owner[client], []).append((client, state))
            (self.holding.add if state is not None else self.holding.discard)(client)
        self._scatter("update", shares)

    def close(self) -> None:
        """Stop every worker (the transport's close); safe to call twice."""
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()

    def __del__(self) -> None:  # a run that raised still stops its workers
        if getattr(self, "transport", None) is not None:
            self.close()


def for_clients(broadcast: Broadcast, clients: list[int]) -> Broadcast:
    """Only the personal downloads of these clients cross to their worker."""
    if broadcast.personal is None:
        return broadcast
    return Broadcast(broadcast.params, broadcast.extra, {c: broadcast.personal[c] for c in clients
                                                         if c in broadcast.personal}, broadcast.wire)
