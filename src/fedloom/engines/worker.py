"""The worker side of the processes engine (and of a future Ray actor): build a runtime from the resolved
run config, then serve train / evaluate / states / restore requests until told to stop."""

from __future__ import annotations

import dataclasses
import traceback
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import torch

from fedloom import errors

#: Sent in place of a broadcast the worker already received (see ProcessEngine._wire).
SAME_BROADCAST = "same-broadcast"


def worker_main(conn: Connection, run_config: Any, inner_engine: str, options: Any) -> None:
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
                "restore": lambda p: engine.restore_client_states(p)}
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
