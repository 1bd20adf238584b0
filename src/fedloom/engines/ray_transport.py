"""The Ray transport of the sharded engine: the Ray engine's workers are Ray actors, one per CPU (or a GPU
fraction each), on a local cluster that fedloom starts and shuts down, or on an existing one
(``--ray.address auto`` or ``ray://host:port``).

Each actor (``RayWorker``) wraps the same ``worker.ShardWorker`` as a process of the multiprocessing transport:
it builds its runtime from the resolved run config with the build floor, holds its clients' states in its own
store, and answers the same commands. On top of that it trains with per-client timings (the scheduler's
measurements, see ray_schedule.py) and merges the partial results of the workers of its node (the node level of
Parrot's hierarchical aggregation: worker → node → driver). Ray is imported only here and only when the engine
starts: ``fedloom[ray]`` is an optional extra.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Any, Optional

import torch

from fedloom.algorithms.tree import tree_map
from fedloom.algorithms.uploads import HeldUploads, UploadAccumulator, Uploads, merge_uploads
from fedloom.engines.base import EngineOptions
from fedloom.engines.heap import configure_heap
from fedloom.engines.ray_state import StagedStore, pending_root, roll_forward
from fedloom.engines.sharded import Transport, resume_hint
from fedloom.engines.state_store import DiskStore
from fedloom.errors import ConfigError, FedloomError, TrainingError
from fedloom.extras import require
from fedloom import errors

#: How long the engine waits for a worker to build its runtime (interpreter, imports, data) before it fails.
STARTUP_SECONDS = 300.0
#: Tries at starting a local cluster (Ray's own start-up deadline is 30 s, short on a loaded machine).
START_ATTEMPTS = 3
#: The nice value of the workers of a local cluster (Ray's default 15 starves them beside any other work).
WORKER_NICENESS = 0
#: How long the address check waits for a TCP connection to an existing cluster.
CONNECT_SECONDS = 5.0


class WorkerLost(TrainingError):
    """A Ray worker died (its process was killed, its node went away); the engine re-runs its clients."""


def import_ray() -> Any:
    """The ray module, or one ConfigError that says how to install it (pip install 'fedloom[ray]')."""
    return require("ray", "ray", "engine 'ray'")


# ---------------------------------------------------------------------------------------------- the cluster
def check_reachable(address: str) -> None:
    """An address other than ``auto`` must accept a TCP connection (Ray would otherwise retry for a minute)."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray.address {address!r}: expected auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
            pass
    except OSError as exc:
        raise ConfigError(f"--ray.address {address}: cannot reach {host}:{port} ({exc.strerror or exc}); start the "
                          f"cluster there (ray start --head), or leave --ray.address out to run a local one") from None


def connect(address: Optional[str], workers: int, gpus_per_worker: float) -> bool:
    """Join or start the cluster; True when this call started Ray in this process (close shuts it down)."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable, as ray.init reads it
    if address:
        check_reachable(address)
    if ray.is_initialized():  # a caller (a notebook, a test fixture) already connected: use it, leave it up
        return False
    if address:
        try:
            ray.init(address=address, logging_level="warning", configure_logging=False)
        except (ConnectionError, RuntimeError) as exc:
            raise ConfigError(f"--ray.address {address}: could not join the cluster ({exc}); start one with "
                              f"ray start --head, or leave --ray.address out to run a local one") from None
        return True
    gpus = _local_gpus() if gpus_per_worker > 0 else 0
    for attempt in range(START_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # Ray's notice of a future default (actors without GPUs see none)
                warnings.simplefilter("ignore", FutureWarning)
                # Ray starts its workers at nice 15 (to keep its raylet responsive): on a shared machine they
                # would lose every core to anything at nice 0; fedloom's workers are the run, as the processes
                # engine's are, so they run at the driver's priority
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), num_gpus=gpus, include_dashboard=False,
                         logging_level="warning", configure_logging=False,
                         _system_config={"worker_niceness": WORKER_NICENESS})
            return True
        except Exception as exc:  # noqa: BLE001  Ray gives its raylet 30 s, too little on a loaded machine
            ray.shutdown()
            if attempt + 1 == START_ATTEMPTS:
                raise TrainingError(f"Ray could not start a local cluster ({first_line(exc)}); is the machine "
                                    f"overloaded? ray status, or start one with ray start --head and pass "
                                    f"--ray.address auto") from None
    return True


def _local_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_resources(ray: Any, workers: int, gpus_per_worker: float) -> None:
    """Workers the cluster cannot place would wait forever: say so at once."""
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    if gpus_per_worker > 0 and gpus_per_worker * workers > gpus + 1e-9:
        raise ConfigError(f"--ray.gpus-per-worker {gpus_per_worker} with {workers} workers needs "
                          f"{gpus_per_worker * workers:g} GPUs, but the Ray cluster has {gpus:g}; lower "
                          f"--ray.gpus-per-worker or --ray.workers, or add GPU nodes")
    if gpus_per_worker == 0 and workers > cpus + 1e-9:
        raise ConfigError(f"--ray.workers {workers} needs one CPU each, but the Ray cluster has {cpus:g}; lower "
                          f"--ray.workers or add nodes")


# ---------------------------------------------------------------------------------------------- the actor
class RayWorker:
    """One worker of the Ray engine (the class made a Ray actor by ``RayTransport.start``)."""

    def __init__(self, index: int, run_config: Any, inner_engine: str, options: EngineOptions) -> None:
        import torch
        from fedloom.engines.worker import ShardWorker
        torch.set_num_threads(1)  # one thread per worker: robust when the machine is shared
        configure_heap(run_config.malloc)
        self.index = index
        self.worker = ShardWorker(run_config, inner_engine, options)
        runtime = self.worker.engine.runtime
        # the states of the start of a round stay untouched until the engine commits it (ray_state.py)
        self.store = runtime.store = StagedStore(runtime.store, index)
        self.inner = inner_engine
        self._broadcast_key: Any = None
        self._broadcast: Any = None
        self._held = HeldUploads()  # this round's decoded uploads, for the ordered reduction
        self._held_round: Optional[int] = None
        self._node: Optional[str] = None

    @property
    def node(self) -> str:
        """The id of this worker's Ray node (asked once: it never changes)."""
        if self._node is None:
            import ray
            self._node = ray.get_runtime_context().get_node_id()
        return self._node

    def info(self) -> dict[str, Any]:
        import ray
        return {"node": self.node, "pid": os.getpid(),
                "ip": ray.util.get_node_ip_address(), "disk_store": self.store.on_disk, "nice": os.nice(0)}

    def handle(self, command: str, payload: Any) -> Any:
        if command in ("train", "evaluate"):
            payload = (payload[0], self._resolve(payload[1]), *payload[2:])
        return self.worker.handle(command, payload)

    def _resolve(self, wire: Any) -> Any:
        """The broadcast behind an object-store reference, deserialised once per broadcast."""
        import ray
        if not isinstance(wire, ray.ObjectRef):
            return wire
        if wire != self._broadcast_key:
            self._broadcast_key, self._broadcast = wire, ray.get(wire)
        return self._broadcast

    def train(self, keep_all: bool, algorithm: Any, wire: Any, clients: list[int], round_: int,
              hold: bool) -> dict[str, Any]:
        """Train ``clients`` one after another (or the inner engine's packs), timing each. ``hold``: keep each
        client's decoded upload here for ``fold`` (the ordered reduction) and return none; else return this
        worker's partial sum (or every upload when ``keep_all``). Metrics, bytes and timings come back always."""
        broadcast = self._resolve(wire)
        engine = self.worker.engine
        self.store.begin(round_)
        started = time.perf_counter()
        if self.inner == "serial":  # one call, each client timed inside it (the scheduler's measurements)
            if hold and self._held_round != round_:  # a re-run of lost clients keeps its round's own uploads
                self._held, self._held_round = HeldUploads(), round_
            accumulator = self._held if hold else UploadAccumulator(keep_all=keep_all)
            metrics, bytes_up, seconds = engine.train_into(accumulator, algorithm, broadcast, clients, round_)
            uploads = None if hold else accumulator.finish()
        else:  # packed clients: one call, its time shared by work
            part = engine.train_cohort(algorithm, broadcast, clients, round_)
            metrics, bytes_up, seconds, uploads = part.client_metrics, part.bytes_up, {}, part.uploads
        busy = time.perf_counter() - started
        store = engine.runtime.store
        return {"uploads": uploads, "metrics": metrics, "bytes_up": bytes_up,
                "workers": {self.index: {"seconds": seconds, "busy": busy, "clients": list(clients),
                                         "stateful": [c for c in clients if c in store],
                                         "staged": self.store.has_staged(), "node": self.node}}}

    def fold(self, keep_all: bool, running: Optional[UploadAccumulator], clients: list[int]) -> UploadAccumulator:
        """The ordered reduction: add the held uploads of ``clients`` (a run of the cohort's order) to the running
        sum, one by one, with the serial engine's own ``UploadAccumulator.add``."""
        if running is None:
            total = UploadAccumulator(keep_all=keep_all)
        else:  # the sum as it arrived from the previous worker; added to in place from here
            own = None if running.weighted_sum is None else tree_map(torch.clone, running.weighted_sum)
            total = UploadAccumulator(keep_all, own, running.total_weight, running.count, list(running.items))
        return self._held.replay(total, clients)

    # ------------------------------------------------------------------ states (ray_state.py)
    def commit(self, backup: bool) -> dict[int, Any]:
        """The round's staged states replace the saved ones (with ``backup``: and come back to the driver)."""
        return self.store.commit(backup)

    def sees(self, clients: list[int]) -> bool:
        """Whether this worker can read the saved states of ``clients`` (a disk store shared with their
        lost worker: the same node, or a shared --store-dir)."""
        return all(client in self.store.base for client in clients)

    def adopt(self, states: list[tuple[int, Any]]) -> None:
        """Saved states of a lost worker's clients (the driver's copy) as the start of their next round here."""
        for client, state in states:
            self.store.base.save(client, state)

    def snapshot(self, clients: list[int]) -> dict[int, Any]:
        """The saved states of ``clients`` (the driver's copy after a change made outside a round)."""
        return {client: self.store.base.load(client) for client in clients}

    def roll_forward(self, round_: int, worker: int) -> bool:
        """Finish (journal written) or drop (not) the commit a lost worker staged on a disk store."""
        base = self.store.base
        return isinstance(base, DiskStore) and roll_forward(base, pending_root(base.root, round_, worker))

    def merge(self, keep_all: bool, *results: dict[str, Any]) -> dict[str, Any]:
        """The node level of the hierarchical aggregation: this node's workers' partial results as one."""
        merged = merge_results(list(results), keep_all)
        merged["merged_on"] = {"node": self.info()["node"], "by": self.index, "workers": sorted(merged["workers"])}
        return merged


def merge_results(results: list[dict[str, Any]], keep_all: bool) -> dict[str, Any]:
    """Partial results (worker or node level) as one, in the order given (the engine orders them by worker)."""
    uploads: list[Uploads] = [r["uploads"] for r in results if r["uploads"] is not None]
    merged = {"uploads": merge_uploads(uploads, keep_all=keep_all) if uploads else None, "metrics": {},
              "bytes_up": 0, "workers": {}}
    for result in results:
        merged["metrics"].update(result["metrics"])
        merged["bytes_up"] += result["bytes_up"]
        for worker, info in result["workers"].items():  # a worker twice: it also re-ran a lost worker's clients
            seen = merged["workers"].setdefault(worker, {"seconds": {}, "busy": 0.0, "clients": [], "stateful": [],
                                                          "staged": False, "node": info["node"]})
            seen["staged"] = seen["staged"] or info.get("staged", False)
            seen["seconds"].update(info["seconds"])
            seen["busy"] += info["busy"]
            seen["clients"] += info["clients"]
            seen["stateful"] += info["stateful"]
    return merged


# ---------------------------------------------------------------------------------------------- the transport
class RayTransport(Transport):
    """Workers as Ray actors: ``scatter`` for the sharded engine's plain commands, ``actors`` and ``nodes``
    for the Ray engine's own round (scheduling, hierarchical aggregation, re-runs)."""

    def __init__(self, options: EngineOptions, address: Optional[str], gpus_per_worker: float) -> None:
        self.options, self.address, self.gpus = options, address, gpus_per_worker
        self.actors: dict[int, Any] = {}
        self.info: dict[int, dict[str, Any]] = {}
        self._owns_ray = False
        self.ray: Any = None

    def start(self, count: int) -> None:
        self.ray = import_ray()
        self._owns_ray = connect(self.address, count, self.gpus)
        check_resources(self.ray, count, self.gpus)
        # SPREAD: workers go to as many nodes as possible (the data and compute of a real cluster's nodes)
        actor_class = self.ray.remote(RayWorker).options(num_cpus=0 if self.gpus else 1, num_gpus=self.gpus,
                                                         max_restarts=0, max_task_retries=0,
                                                         scheduling_strategy="SPREAD")
        cfg, inner = self.options.run_config, self.options.worker_engine
        self.actors = {i: actor_class.remote(i, cfg, inner, self.options) for i in range(count)}
        refs = {i: actor.info.remote() for i, actor in self.actors.items()}
        for index, ref in refs.items():
            self.info[index] = self.get(ref, index, timeout=STARTUP_SECONDS, starting=True)

    def scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        refs = {i: self.actors[i].handle.remote(command, share) for i, share in shares.items()}
        return {i: self.get(ref, i) for i, ref in refs.items()}

    def get(self, ref: Any, index: int, timeout: Optional[float] = None, starting: bool = False) -> Any:
        """The value of a worker's reply; its error as fedloom raises errors (a lost worker: TrainingError)."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref, timeout=timeout)
        except exceptions.GetTimeoutError:
            raise TrainingError(f"Ray worker {index} did not start within {timeout:.0f} s (is the cluster short of "
                                f"resources? see ray status)") from None
        except exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FedloomError):  # the worker's constructor failed (a bad config, say)
                raise remote_error(exc, index) from None
            where = "while starting" if starting else f"; {resume_hint(self.options.run_config)}"
            raise WorkerLost(f"Ray worker {index} died ({first_line(exc)}){where}") from None
        except exceptions.RayTaskError as exc:
            if isinstance(getattr(exc, "cause", None), exceptions.RayActorError):  # a dependency's worker died
                raise WorkerLost(f"Ray worker {index} lost an input ({first_line(exc)})") from None
            raise remote_error(exc, index) from None

    def kill(self, index: int) -> None:
        """Forget a dead worker (and make sure it is gone)."""
        actor = self.actors.pop(index, None)
        if actor is not None:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001  (already gone)
                pass

    def close(self) -> None:
        """Stop every actor, then Ray itself when fedloom started it; safe to call twice."""
        for index in list(self.actors):
            self.kill(index)
        if self._owns_ray and self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False


def remote_error(exc: Any, index: int) -> Exception:
    """A worker's exception as the main process raises it: fedloom errors keep their type and message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FedloomError):
        cls = getattr(errors, type(cause).__name__, None)
        return (cls if isinstance(cls, type) else TrainingError)(str(cause))
    return RuntimeError(f"Ray worker {index} failed: {exc}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
