"""The worker side of the processes engine (and of a future Ray actor): build a runtime from the resolved
run config, then serve train / evaluate / states / restore requests until told to stop.

A daemon thread stamps the worker's heartbeat (a shared double) every HEARTBEAT_SECONDS, so the main process
can tell a slow worker (busy in a long training step: its thread keeps beating) from a frozen or stopped one
(SIGSTOP stops every thread of a process, so its heartbeat goes stale). The same thread ends the worker when
its parent has gone (a kill -9 of the CLI), so no orphan keeps computing.
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

#: Sent in place of a broadcast the worker already received (see ProcessEngine._wire).
SAME_BROADCAST = "same-broadcast"
#: How often a worker stamps its heartbeat (and checks that its parent is alive).
HEARTBEAT_SECONDS = 0.5
#: Exit status of a worker that found its parent gone.
EXIT_ORPHANED = 3


def worker_main(conn: Connection, run_config: Any, inner_engine: str, options: Any, beat: Any = None) -> None:
    # Ctrl-C reaches the whole foreground process group; stopping the workers is the main process's job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if beat is not None:  # first, so that a slow start-up (data loading) is seen as alive
        parent = multiprocessing.parent_process()  # the pid it was started by, even if that one is gone already
        start_heartbeat(beat, parent.pid if parent is not None else os.getppid())
    torch.set_num_threads(1)  # one thread per process: robust when the machine is shared
    try:
        engine = build_worker_engine(run_config, inner_engine, options)
        conn.send(("ok", None))
    except BaseException as exc:  # report, then exit: the main process raises it
        conn.send(("error", describe(exc)))
        return
    held = {}  # the last broadcast received, reused when the main process sends SAME_BROADCAST

    def with_broadcast(payload: tuple) -> tuple:
        if isinstance(payload[1], str) and payload[1] == SAME_BROADCAST:
            return (payload[0], held["broadcast"], *payload[2:])
        held["broadcast"] = payload[1]
        return payload

    handlers = {"train": lambda p: train(engine, *with_broadcast(p)),
                "evaluate": lambda p: engine.evaluate(*with_broadcast(p)),
                "states": lambda p: list(engine.client_states()),
                "restore": lambda p: engine.restore_client_states(p),
                "update": lambda p: engine.update_client_states(p)}
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):
            return
        if command == "stop":
            return
        try:
            conn.send(("ok", handlers[command](payload)))
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


def build_worker_engine(run_config: Any, inner_engine: str, options: Any) -> Any:
    from fedloom.engines import ENGINES
    from fedloom.run import build_experiment, load_data, resolve_device

    device = resolve_device(run_config.device)
    data = load_data(run_config, device)
    exp = build_experiment(dataclasses.replace(run_config, engine="serial"), data, device)
    return ENGINES.get(inner_engine)(exp.runtime, dataclasses.replace(options, run_config=None))


def train(engine: Any, algorithm: Any, broadcast: Any, clients: list[int], round_: int) -> dict[str, Any]:
    result = engine.train_cohort(algorithm, broadcast, clients, round_)
    return {"uploads": result.uploads, "metrics": result.client_metrics, "bytes_up": result.bytes_up}


def describe(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}


def raise_remote(info: dict[str, str], index: int) -> NoReturn:
    """Re-raise a worker's error in the main process: fedloom errors keep their type and one-line message."""
    cls = getattr(errors, info["type"], None)
    if isinstance(cls, type) and issubclass(cls, errors.FedloomError):
        raise cls(info["message"])
    raise RuntimeError(f"worker {index} failed: {info['type']}: {info['message']}\n{info['traceback']}")
