"""The worker side of a sharded engine: ``ShardWorker`` builds a runtime from the resolved run config (with
``engines.build.build_runtime``, the same constructor the main process uses) and its own engine over it, then
answers train / evaluate / states / restore / update requests. It knows nothing of the transport: a process of
the multiprocessing transport (``worker_main`` below) or a Ray actor would wrap it the same way.

``worker_main`` is a worker process of the multiprocessing transport: a daemon thread stamps the worker's
heartbeat (a shared double) every HEARTBEAT_SECONDS, so the main process can tell a slow worker (busy in a long
training step: its thread keeps beating) from a frozen or stopped one (SIGSTOP stops every thread of a process,
so its heartbeat goes stale). The same thread ends the worker when its parent has gone (a kill -9 of the CLI),
so no orphan keeps computing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, NoReturn, Optional

import torch

from fedloom import errors
from fedloom.config import RunConfig
from fedloom.engines.base import ENGINES, Engine, EngineOptions
from fedloom.engines.build import build_runtime
from fedloom.engines.heap import configure_heap

#: Sent in place of a broadcast the worker already received (see ShardedEngine._wire).
SAME_BROADCAST = "same-broadcast"
#: How often a worker stamps its heartbeat (and checks that its parent is alive).
HEARTBEAT_SECONDS = 0.5
#: Exit status of a worker that found its parent gone.
EXIT_ORPHANED = 3


class ShardWorker:
    """One worker of a sharded engine, whatever carries its messages: its runtime and engine, and the last
    broadcast it received (reused when the engine sends SAME_BROADCAST)."""

    def __init__(self, run_config: RunConfig, inner_engine: str, options: EngineOptions) -> None:
        self.engine = build_worker_engine(run_config, inner_engine, options)
        self._broadcast: Any = None
        self._handlers: dict[str, Callable[[Any], Any]] = {
            "train": lambda p: train(self.engine, *self._with_broadcast(p)),
            "evaluate": lambda p: self.engine.evaluate(*self._with_broadcast(p)),
            "states": lambda p: list(self.engine.client_states()),
            "restore": lambda p: self.engine.restore_client_states(p),
            "update": lambda p: self.engine.update_client_states(p)}

    def handle(self, command: str, payload: Any) -> Any:
        """The reply to one request (exceptions propagate: the transport reports them with ``describe``)."""
        return self._handlers[command](payload)

    def _with_broadcast(self, payload: tuple) -> tuple:
        if isinstance(payload[1], str) and payload[1] == SAME_BROADCAST:
            return (payload[0], self._broadcast, *payload[2:])
        self._broadcast = payload[1]
        return payload


def worker_main(conn: Connection, run_config: RunConfig, inner_engine: str, options: EngineOptions,
                beat: Any = None) -> None:
    """A worker process of the multiprocessing transport: build, say ``("ok", None)`` (or the error), then
    serve ``(command, payload)`` messages from ``conn`` until "stop" or the pipe closes."""
    # Ctrl-C reaches the whole foreground process group; stopping the workers is the main process's job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if beat is not None:  # first, so that a slow start-up (data loading) is seen as alive
        parent = multiprocessing.parent_process()  # the pid it was started by, even if that one is gone already
        start_heartbeat(beat, parent.pid if parent is not None else os.getppid())
    torch.set_num_threads(1)  # one thread per process: robust when the machine is shared
    configure_heap(run_config.malloc)  # a forked worker has it already; a spawned one starts with glibc's
    try:
        worker = ShardWorker(run_config, inner_engine, options)
        conn.send(("ok", None))
    except BaseException as exc:  # report, then exit: the main process raises it
        conn.send(("error", describe(exc)))
        return
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):
            return
        if command == "stop":
            return
        try:
            conn.send(("ok", worker.handle(command, payload)))
        except BaseException as exc:
            conn.send(("error", describe(exc)))


def start_heartbeat(beat: Any, parent: int, interval: float = HEARTBEAT_SECONDS) -> threading.Thread:
    """Stamp ``beat.value`` with ``time.monotonic()`` (one clock for every process of the machine) every
    ``interval`` seconds from a daemon thread; the worker exits as soon as ``parent`` is no longer its parent."""
    thread = threading.Thread(target=heartbeat_loop, args=(beat, parent, interval), name="fedloom-heartbeat",
                              daemon=True)
    thread.start()
    return thread


def heartbeat_loop(beat: Any, parent: int, interval: float, stop: Optional[threading.Event] = None,
                   on_orphan: Optional[Callable[[], None]] = None) -> None:
    """The heartbeat thread's body (``stop`` and ``on_orphan`` exist for tests)."""
    while stop is None or not stop.is_set():
        if os.getppid() != parent:  # reparented: the main process died without stopping us
            (on_orphan or _exit_orphaned)()
            return
        beat.value = time.monotonic()
        time.sleep(interval)


def _exit_orphaned() -> None:
    os._exit(EXIT_ORPHANED)  # no cleanup to wait for: the main process that wanted our results is gone


def build_worker_engine(run_config: RunConfig, inner_engine: str, options: EngineOptions) -> Engine:
    """The engine a worker runs over its own clients: one runtime from the build floor, one engine over it."""
    built = build_runtime(run_config)
    return ENGINES.get(inner_engine)(built.runtime, dataclasses.replace(options, run_config=None))


def train(engine: Engine, algorithm: Any, broadcast: Any, clients: list[int], round_: int) -> dict[str, Any]:
    """Train ``clients``; the reply says which of them now hold a saved state (they stay on this worker)."""
    result = engine.train_cohort(algorithm, broadcast, clients, round_)
    store = engine.runtime.store
    return {"uploads": result.uploads, "metrics": result.client_metrics, "bytes_up": result.bytes_up,
            "holding": [client for client in clients if client in store]}


def describe(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}


def raise_remote(info: dict[str, str], index: int) -> NoReturn:
    """Re-raise a worker's error in the main process: fedloom errors keep their type and one-line message."""
    cls = getattr(errors, info["type"], None)
    if isinstance(cls, type) and issubclass(cls, errors.FedloomError):
        raise cls(info["message"])
    raise RuntimeError(f"worker {index} failed: {info['type']}: {info['message']}\n{info['traceback']}")
