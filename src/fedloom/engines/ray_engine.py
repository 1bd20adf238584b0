"""The Ray engine: the sharded engine's workers as Ray actors, with Parrot-style scheduling, hierarchical
aggregation and re-runs of a lost worker's clients (FedML Parrot, Tang et al., arXiv 2303.01778, 2023; Ray,
Moritz et al., OSDI 2018).

A worker (``ray_transport.RayWorker``) holds its data and its clients' states and trains the clients it is given
one after another (or with the vectorized engine inside). The broadcast is put into the object store once per
round and every worker reads it from there. Each round:

1. the cohort is scheduled (ray_schedule.py): a client whose state lives on a worker stays there, the others go
   where the estimated makespan is least; estimates come from the per-client times measured every round;
2. the workers train, and the uploads are reduced in one of two ways (``--ray.reduce``):
   ``ordered`` (default): each worker keeps its clients' decoded uploads and the running sum passes from
   worker to worker along the cohort's order, each adding its clients with the serial engine's accumulator (one hop per run of consecutive clients: the schedule gives each
   worker a contiguous run, workers grouped by node, so the sum crosses each node once); the additions are the
   serial engine's, in its order, so metrics.jsonl is byte-identical to serial whatever the placement;
   ``tree``: one float64 partial sum per worker, merged on each node by its lowest-index worker, then at the
   driver (worker → node → driver, as in Parrot): fewer sequential steps, equal to serial up to the rounding
   of float64 additions done in another grouping. With the vectorized engine inside, the reduction is a tree;
3. the workers commit the round's new client states (staged until then, ray_state.py); a worker that died has
   its clients re-run on the survivors from the states of the start of the round: every draw of a client comes
   from (seed, round, client, purpose), so the round is the round a clean run computes. Its saved states find a
   new home first: the driver's copy (memory stores, kept at every commit) or the disk store's files read by a
   survivor that sees them (the same node, or a shared --store-dir); where none does, the run ends with the
   resume hint, as a driver crash does.

The idle fraction of each round (time the workers waited for the slowest one) goes to timings.jsonl, never to
metrics.jsonl.

Options: ``--ray.workers`` (default: the number of cores), ``--ray.worker-engine``, ``--ray.gpus-per-worker``,
``--ray.address`` (``auto``, ``host:port`` or ``ray://host:port``; default: a local cluster started and shut
down by fedloom), ``--ray.reduce`` (``ordered`` or ``tree``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.engines.base import ENGINE_OPTIONS, ENGINES, CohortResult, EngineOptions
from fedloom.engines.context import Runtime
from fedloom.engines.options import engine_option
from fedloom.engines.ray_schedule import CostModel, idle_fraction, schedule, schedule_in_order
from fedloom.engines.ray_transport import RayTransport, WorkerLost, merge_results
from fedloom.engines.sharded import ShardedEngine, for_clients, resume_hint
from fedloom.errors import ConfigError, TrainingError


REDUCTIONS = ("ordered", "tree")


# the Ray engine's options: --ray.<option> or a [ray] table (no docstring: `fedloom list` shows the module's
# first line)
@ENGINE_OPTIONS.register("ray")
@dataclass(frozen=True)
class RayOptions:
    workers: Optional[int] = engine_option(None, "workers", "Ray actors (default: number of cores)", ge=1)
    worker_engine: str = engine_option("serial", "worker_engine", "engine inside each actor",
                                       choices=("serial", "vectorized"))
    gpus_per_worker: float = engine_option(0.0, "ray_gpus_per_worker", "GPUs per actor (a fraction shares one)",
                                           ge=0)
    address: Optional[str] = engine_option(None, "ray_address", "existing cluster: auto, host:port or "
                                                                "ray://host:port (default: a local one)")
    reduce: str = engine_option("ordered", "ray_reduce", "ordered: the serial engine's additions in cohort order "
                                                         "(byte-identical); tree: partial sums worker -> node -> "
                                                         "driver", choices=REDUCTIONS)


@ENGINES.register("ray")
class RayEngine(ShardedEngine):
    """The sharded engine over Ray actors, scheduling each round's clients by measured cost."""

    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        reduce = getattr((options or EngineOptions()).run_config, "ray_reduce", "ordered")
        if reduce not in REDUCTIONS:  # given as --ray-reduce, which no options dataclass checks
            raise ConfigError(f"--ray.reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
        self.recoveries: list[dict[str, Any]] = []  # lost workers and where their clients went (tests, logs)
        self._stats: dict[str, Any] = {}
        self._puts: tuple[Any, Any] = (None, None)  # (broadcast, its object-store reference) of this round
        self.last_merges: list[dict[str, Any]] = []
        self.last_workers: dict[int, dict[str, Any]] = {}
        super().__init__(runtime, options)
        self.model = CostModel([float(i.numel() * runtime.sgd.epochs) for i in runtime.data.train_idx])
        self.alive = sorted(self.transport.actors)
        self.node_of = {w: info["node"] for w, info in self.transport.info.items()}
        self.pinned: dict[int, int] = {}  # client → the worker holding its saved state
        # memory stores die with their worker: the driver keeps a copy of every committed state (ray_state.py)
        self.backup = not all(info.get("disk_store") for info in self.transport.info.values())
        self.saved: dict[int, Tree] = {}

    def make_transport(self) -> RayTransport:
        cfg = self.options.run_config
        return RayTransport(self.options, cfg.ray_address, cfg.ray_gpus_per_worker)

    # ------------------------------------------------------------------ broadcast
    def _wire(self, index: int, broadcast: Broadcast, clients: list[int]) -> Any:
        """An object-store reference: one put per round for a shared broadcast (every worker reads the same
        object); a broadcast with personal downloads gets one put per worker with only its clients' part."""
        if broadcast.personal is not None:
            return self.transport.ray.put(for_clients(broadcast, clients))
        if self._puts[0] is not broadcast:
            self._puts = (broadcast, self.transport.ray.put(broadcast))
        return self._puts[1]

    def _everyone(self) -> list[int]:
        return list(self.alive)

    # ------------------------------------------------------------------ a round
    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        keep_all = self.runtime.keep_all(algorithm)
        started = time.perf_counter()
        results, holder, folded = self._train(algorithm, broadcast, cohort, round_, keep_all)
        results += self._commit(algorithm, broadcast, round_, results, keep_all)
        merged = merge_results(sorted(results, key=lambda r: min(r["workers"])), keep_all)
        uploads = folded.finish() if self.ordered else merged["uploads"]
        self.last_workers = {w: info for w, info in merged["workers"].items() if w in self.alive}
        self._account(self.last_workers, time.perf_counter() - started)
        return CohortResult(uploads, dict(sorted(merged["metrics"].items())), merged["bytes_up"])

    def _train(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int], round_: int,
               keep_all: bool) -> tuple[list[dict], dict[int, int], Any]:
        """The workers' replies, who holds each client's contribution, and (ordered reduction) their sum."""
        ordered = self.ordered
        results: list[dict] = []
        holder: dict[int, int] = {}
        pending, folded, chain = list(cohort), None, None
        while pending:  # more than once only when a worker died
            plan = schedule_in_order if ordered else schedule
            waiting = set(pending)
            shares = plan([c for c in cohort if c in waiting], self._chain_order(), self.model, self.pinned)
            refs = {w: self.transport.actors[w].train.remote(keep_all, algorithm, self._wire(w, broadcast, c), c,
                                                             round_, ordered) for w, c in shares.items()}
            if ordered and pending == cohort:  # the fold chain queued behind the training: no wait in between
                chain = self._chain(cohort, {c: w for w, clients in shares.items() for c in clients}, keep_all)
            got, lost = self._gather(refs) if ordered else self._reduce(refs, keep_all)
            results.extend(got)
            holder.update({c: w for w, clients in shares.items() if w not in lost for c in clients})
            pending = sorted(c for w in lost for c in shares[w])
            if lost:
                chain = None  # it would fold a lost worker's uploads: folded again below, from the holders
                self._recover(lost, pending, round_)
            while ordered and not pending:  # every contribution is held: fold them in the cohort's order
                folded, lost = self._fold(chain or self._chain(cohort, holder, keep_all))
                if not lost:
                    break
                chain = None
                pending = sorted(c for c, w in holder.items() if w in lost)  # their contributions died too
                results = [r for r in results if not set(r["workers"]) & set(lost)]  # their re-run reports
                self._recover(lost, pending, round_)
        return results, holder, folded

    def _commit(self, algorithm: Algorithm, broadcast: Broadcast, round_: int, results: list[dict],
                keep_all: bool) -> list[dict]:
        """The round's new states replace the saved ones on every worker that staged some (the driver keeping
        a copy when the stores are in memory). A worker lost here: its commit is rolled forward from its
        journal (disk store), or its clients of the round are trained again from the states of the start of
        the round, their replies kept only for placement and timings (returned)."""
        staged = sorted({w for r in results for w, info in r["workers"].items() if info.get("staged")}
                        & set(self.alive))
        refs = {w: self.transport.actors[w].commit.remote(self.backup) for w in staged}
        lost = []
        for w, ref in refs.items():
            try:
                self._keep(self.transport.get(ref, w))
            except WorkerLost:
                lost.append(w)
        if not lost:
            return []
        clients = sorted(c for r in results for w, info in r["workers"].items() if w in lost
                         for c in info["clients"])
        rolled = self._recover(lost, clients, round_)
        for r in results:  # a rolled-forward commit: its states are read where they were rolled forward
            for w, info in r["workers"].items():
                if w in rolled:
                    self.pinned.update({c: rolled[w] for c in info["stateful"]})
        again = sorted(c for r in results for w, info in r["workers"].items() if w in lost and w not in rolled
                       for c in info["clients"])
        if not again:
            return []
        rerun = self._train(algorithm, broadcast, again, round_, keep_all)[0]
        rerun += self._commit(algorithm, broadcast, round_, rerun, keep_all)
        return [{**r, "uploads": None, "metrics": {}, "bytes_up": 0} for r in rerun]  # counted once, above

    @property
    def ordered(self) -> bool:
        """The ordered reduction: with ``--ray.reduce ordered`` and workers that train client by client."""
        return self.options.run_config.ray_reduce == "ordered" and self.options.worker_engine == "serial"

    def _chain_order(self) -> list[int]:
        """Live workers grouped by node: contiguous runs of the cohort stay on one node, so the running sum
        crosses from node to node once per node."""
        nodes = list(dict.fromkeys(self.node_of[w] for w in self.alive))
        return sorted(self.alive, key=lambda w: (nodes.index(self.node_of[w]), w))

    def _gather(self, refs: dict[int, Any]) -> tuple[list[dict], list[int]]:
        """Every worker's reply, and the workers lost on the way."""
        results, lost = [], []
        for w, ref in refs.items():
            try:
                results.append(self.transport.get(ref, w))
            except WorkerLost:
                lost.append(w)
        return results, lost

    def _chain(self, cohort: list[int], holder: dict[int, int], keep_all: bool) -> list[tuple[int, Any]]:
        """Queue the running sum's passage from worker to worker along the cohort's order (one call per run of
        consecutive clients on one worker, chained in the object store without the driver in between): each
        call runs after the worker's training (Ray runs an actor's calls from one caller in order)."""
        runs: list[tuple[int, list[int]]] = []
        for client in cohort:
            if runs and runs[-1][0] == holder[client]:
                runs[-1][1].append(client)
            else:
                runs.append((holder[client], [client]))
        running, calls = None, []
        for w, clients in runs:
            running = self.transport.actors[w].fold.remote(keep_all, running, clients)
            calls.append((w, running))
        return calls

    def _fold(self, calls: list[tuple[int, Any]]) -> tuple[Any, list[int]]:
        """The chain's sum, or the first worker of the chain that was lost."""
        try:
            return self.transport.get(calls[-1][1], calls[-1][0]), []
        except WorkerLost:  # find who: the first call of the chain that failed
            for w, ref in calls:
                try:
                    self.transport.get(ref, w)
                except WorkerLost:
                    return None, [w]
            raise

    def _reduce(self, refs: dict[int, Any], keep_all: bool) -> tuple[list[dict], list[int]]:
        """Node results (each node's workers merged on the node by its lowest-index worker), and the workers
        lost on the way. A node whose merge failed is taken apart worker by worker."""
        by_node: dict[str, list[int]] = {}
        for w in sorted(refs):
            by_node.setdefault(self.node_of[w], []).append(w)
        node_refs = {}
        for workers in by_node.values():
            leader = workers[0]
            node_refs[leader] = (refs[leader] if len(workers) == 1 else self.transport.actors[leader].merge.remote(
                keep_all, *[refs[w] for w in workers]))
        results, lost = [], []
        for leader, ref in node_refs.items():
            try:
                results.append(self.transport.get(ref, leader))
            except WorkerLost:  # a worker of this node died: keep what its other workers computed
                got, gone = self._gather({w: refs[w] for w in by_node[self.node_of[leader]]})
                results.extend(got)
                lost.extend(gone)
        self.last_merges = [r["merged_on"] for r in results if "merged_on" in r]  # node-level merges (tests)
        return results, lost

    def _recover(self, lost: list[int], clients: list[int], round_: int) -> dict[int, int]:
        """Forget the lost workers and give their clients' saved states a new home on the survivors (the
        driver's copy, or the same disk store read from another worker); their clients of this round run again
        on the survivors (by the schedule). The lost workers whose commit was rolled forward come back, with
        the survivor that did it."""
        stranded = sorted(c for c, w in self.pinned.items() if w in lost)
        for w in lost:
            self.transport.kill(w)
            self.alive.remove(w)
        cfg = self.options.run_config
        if not self.alive:
            raise TrainingError(f"every Ray worker died in round {round_}; {resume_hint(cfg)}")
        rolled = {} if self.backup else {w: by for w in lost if (by := self._roll_forward(round_, w)) is not None}
        if stranded:
            self._rehome(stranded, lost, round_)
        for client, owner in self.owner.items():  # evaluation and states of the lost workers' clients
            if owner in lost:
                self.owner[client] = self.pinned.get(client, self.alive[client % len(self.alive)])
        self.recoveries.append({"round": round_, "lost": list(lost), "rerun": list(clients),
                                "rehomed": stranded, "rolled_forward": sorted(rolled)})
        return rolled

    def _roll_forward(self, round_: int, worker: int) -> Optional[int]:
        """A lost worker's staged commit on a disk store finished (journal written: the survivor that did it)
        or dropped (None), by the first survivor that sees it (one after another: idempotent, never concurrent)."""
        for w in self.alive:
            if self.transport.get(self.transport.actors[w].roll_forward.remote(round_, worker), w):
                return w
        return None

    def _rehome(self, stranded: list[int], lost: list[int], round_: int) -> None:
        """Saved states of the lost workers' clients to survivors: the driver's copy sent (memory stores), or
        the survivors that can read the disk store's files (same node, or a shared --store-dir) pinned."""
        if self.backup:
            homes = list(self.alive)
            shares: dict[int, list[int]] = {}
            for i, client in enumerate(stranded):
                shares.setdefault(homes[i % len(homes)], []).append(client)
            refs = {w: self.transport.actors[w].adopt.remote([(c, self.saved.get(c)) for c in clients])
                    for w, clients in shares.items()}
            for w, ref in refs.items():
                self.transport.get(ref, w)
        else:
            sees = {w: self.transport.actors[w].sees.remote(stranded) for w in self.alive}
            homes = [w for w, ref in sees.items() if self.transport.get(ref, w)]
            if not homes:
                raise TrainingError(
                    f"Ray worker(s) {lost} died in round {round_} holding the saved states of clients "
                    f"{stranded[:8]}{'...' if len(stranded) > 8 else ''} in a disk store no surviving worker can "
                    f"read (a node's local disk: put --store-dir on a folder every node shares); "
                    f"{resume_hint(self.options.run_config)}")
        self.pinned.update({client: homes[i % len(homes)] for i, client in enumerate(stranded)})

    def _keep(self, states: dict[int, Any]) -> None:
        """The driver's copy of committed states (memory stores only; None: a deleted state)."""
        for client, state in states.items():
            if state is None:
                self.saved.pop(client, None)
            else:
                self.saved[client] = state

    def _account(self, workers: dict[int, dict[str, Any]], wall: float) -> None:
        """Measurements into the cost model, placement into the owner map, the round's idle fraction."""
        for w, info in workers.items():
            seconds = info["seconds"] or self._shared_time(info)
            self.model.observe(w, seconds)
            for client in info["clients"]:
                self.owner[client] = w
            self.pinned.update({client: w for client in info["stateful"]})
        busy = {w: info["busy"] for w, info in workers.items()}
        self._stats = {"idle_fraction": round(idle_fraction(busy, len(self.alive)), 4),
                       "ray_workers": len(self.alive), "ray_nodes": len(set(self.node_of[w] for w in self.alive)),
                       "max_busy_seconds": round(max(busy.values(), default=0.0), 4),
                       "round_wall_seconds": round(wall, 4)}

    def _shared_time(self, info: dict[str, Any]) -> dict[int, float]:
        """A packed (vectorized) worker's time shared among its clients by work."""
        clients = info["clients"]
        total = sum(self.model.work[c] for c in clients) or 1.0
        return {c: info["busy"] * self.model.work[c] / total for c in clients}

    def restore_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        """Restored states (a resume) go to their clients' workers, which then hold them: pinned there."""
        states = list(states)
        super().restore_client_states(states)
        self.pinned.update({client: self.owner[client] for client, _ in states})
        if self.backup:
            self.saved = {client: state for client, state in states if state is not None}

    def update_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        """States changed outside a round (gossip's mixing): the driver's copy read back from their workers."""
        states = list(states)
        super().update_client_states(states)
        if self.backup:
            shares = self._shares(client for client, _ in states)
            refs = {w: self.transport.actors[w].snapshot.remote(clients) for w, clients in shares.items()}
            for w, ref in refs.items():
                self._keep(self.transport.get(ref, w))

    def round_stats(self) -> dict[str, Any]:
        """The last round's scheduling figures (timings.jsonl): idle fraction, workers, nodes."""
        return dict(self._stats)
