"""The node side: a Flower ClientApp that holds some of a fedloom run's clients, as a device would.

A node is the processes engine's worker (``engines/worker.py``) moved onto its own machine: it builds the runtime
from the same resolved config (``engines.build.build_runtime``), trains and evaluates only its own clients with
the serial engine's steps, and keeps their states between rounds in the node's own ``Context.state`` (Flower
keeps it on the SuperNode; it never leaves the device). Which clients it holds comes from its node config:
``partition-id`` and ``num-partitions`` (Flower's own keys; node i of n holds clients c with c mod n = i) or an
explicit ``clients = "0,3"``. An upload leaves the node in its wire form (``flower.records``): the algorithm's
``Compact`` message, or the payload of the upload pipeline's codecs (top-k indices and values...), with the
decoder beside it. The server decodes.

McMahan et al. (AISTATS 2017), FedAvg: the client update runs on the device that holds the data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedloom import __version__
from fedloom.algorithms.base import Broadcast
from fedloom.config import RunConfig
from fedloom.engines.build import build_runtime
from fedloom.engines.serial import SerialEngine
from fedloom.errors import ConfigError
from fedloom.flower import records
from fedloom.flower.common import (EVALUATE, HELLO, TRAIN, ConfigSource, config_difference, error_info,
                                   fingerprint, load_config, shared_toml)
from fedloom.pipeline.context import TransformContext
from fedloom.pipeline.wire import Compact, decoded, flatten

log = logging.getLogger("fedloom.flower")
STATE_PREFIX = "fedloom.state."


# ------------------------------------------------------------------------------------------------ partitions
def node_clients(node_config: dict[str, Any], num_clients: int) -> list[int]:
    """The client ids a node holds, from its node config (one ConfigError when it has none or names one that
    does not exist)."""
    if "clients" in node_config:
        try:
            ids = [int(x) for x in str(node_config["clients"]).replace(" ", "").split(",") if x]
        except ValueError:
            raise ConfigError(f"node config clients={node_config['clients']!r} must be a list of client ids "
                              f"such as \"0,3,5\"") from None
    elif "partition-id" in node_config and "num-partitions" in node_config:
        part, parts = int(node_config["partition-id"]), int(node_config["num-partitions"])
        if parts < 1 or not 0 <= part < parts:
            raise ConfigError(f"node config partition-id={part} is not one of the {parts} partitions "
                              f"(0..{parts - 1})")
        ids = list(range(part, num_clients, parts))
    else:
        raise ConfigError("this node has no partition: start it with --node-config 'partition-id=I "
                          "num-partitions=N' (it holds clients c with c mod N = I) or 'clients=\"0,3\"'")
    unknown = [c for c in ids if not 0 <= c < num_clients]
    if unknown:
        raise ConfigError(f"node config names client {unknown[0]}, but the run has {num_clients} clients "
                          f"(0..{num_clients - 1})")
    if not ids:
        raise ConfigError(f"this node's partition holds no client of the {num_clients} (node config "
                          f"{dict(node_config)})")
    return sorted(set(ids))


# ------------------------------------------------------------------------------------------------ the worker
class NodeWorker:
    """One node's runtime over its own clients."""

    def __init__(self, cfg: RunConfig, clients: list[int]) -> None:
        local = dataclasses.replace(cfg, engine="serial", store="memory", out=None)
        built = build_runtime(local, device=torch.device("cpu") if cfg.device == "auto" else None)
        self.config, self.algorithm, self.runtime = built.config, built.algorithm, built.runtime
        self.engine = SerialEngine(self.runtime)
        self.clients = clients
        self._rebuilt: tuple[str, Broadcast] | None = None  # the last compact broadcast rebuilt, by wire digest

    def rebuild(self, wire: Compact, client: int, round_: int) -> Broadcast:
        """The algorithm's rebuild of a compact broadcast, once per distinct download: an evaluation and the next
        round's training receive the same one."""
        key = wire_key(wire)
        if self._rebuilt is None or self._rebuilt[0] != key:
            init_params = self.runtime.client_context(client, round_).init_params
            self._rebuilt = (key, self.algorithm.rebuild_broadcast(wire, init_params))
        return self._rebuilt[1]

    def load_states(self, state: RecordDict) -> None:
        """The node's Context.state is the truth: a runtime reused from an earlier message or run (one process
        serving several messages) holds exactly what the context holds, and nothing for a client without."""
        for client in self.clients:
            name = f"{STATE_PREFIX}{client}"
            self.runtime.store.save(client, records.get_tree(state, name) if name in state.array_records else None)

    def save_states(self, state: RecordDict, clients: list[int]) -> None:
        for client in clients:
            records.put_tree(state, f"{STATE_PREFIX}{client}", self.runtime.store.load(client))

    def train(self, broadcast: Broadcast, clients: list[int], round_: int, reply: RecordDict) -> None:
        """Each client's update, its new state into the store, its upload into ``reply`` in wire form."""
        pipeline = self.runtime.uploads
        meta = {}
        for client in clients:
            ctx = self.runtime.client_context(client, round_)
            result = self.algorithm.client_update(ctx, broadcast.for_client(client),
                                                  self.engine._load_state(self.algorithm, client))
            message, tstates = encode_upload(pipeline, client, round_, result.upload,
                                             self.engine._transform_states(client))
            self.runtime.store.save(client, pipeline.join(result.state, tstates))
            records.put_value(reply, f"up.{client}", message)
            meta[client] = {"weight": float(pipeline.weight_of(result.weight)), "metrics": result.metrics}
        records.put_object(reply, "clients", meta)

    def evaluate(self, broadcast: Broadcast, clients: list[int], round_: int, split: str) -> dict:
        return self.engine.evaluate(self.algorithm, broadcast, clients, round_, split)


def encode_upload(pipeline: Any, client_id: int, round_: int, upload: Any,
                  transform_states: dict) -> tuple[Any, dict]:
    """The client half of ``UploadPipeline.finish``: attack → transforms → the codecs' encoding, stopping at
    the wire form (a Compact with its decoder; the dense tree when no codec encodes it)."""
    if upload is None or pipeline.empty:
        return upload, transform_states
    tctx = TransformContext(pipeline.seed, round_, client_id, client_id in pipeline.malicious, pipeline.clip_norm)
    states = dict(transform_states)
    upload, done = pipeline.on_compact(tctx, upload, states)  # transforms on a Compact's arrays: it stays one
    if done == len(pipeline.transforms) and isinstance(upload, Compact):
        return upload, states
    tree = decoded(upload)
    if tctx.malicious and pipeline.attack is not None:
        tree = pipeline.attack.corrupt(tctx, tree)
    for name, transform in pipeline.transforms[done:]:
        tree, states[name] = transform.apply(tctx, tree, states.get(name))
    codecs = tuple(t for _, t in pipeline.transforms if t.has_codec)
    if not codecs:
        return tree, states
    payload = flatten(tree)
    for codec in codecs:
        payload = codec.encode(payload, tctx)
    shapes = records.split_tensors(tree)[0]  # the tree's shape, to rebuild it after decoding
    return Compact(payload, functools.partial(decode_codecs, codecs, shapes)), states


def decode_codecs(codecs: tuple, skeleton: Any, payload: dict) -> Any:
    """The server half: the codecs' decoding in reverse order, then the tree."""
    for codec in reversed(codecs):
        payload = codec.decode(payload)
    keys = records.split_tensors(records.fill_tensors(skeleton, _KeyNames()))[1]
    return records.fill_tensors(skeleton, {key: payload[key] for key in keys})


class _KeyNames(dict):
    """A mapping that answers each slot with a placeholder tensor (to list a skeleton's keys)."""

    def __missing__(self, key: str) -> torch.Tensor:
        return torch.empty(0)


# ------------------------------------------------------------------------------------------------ messages
def read_broadcast(content: RecordDict, worker: Optional["NodeWorker"] = None) -> Broadcast:
    """The broadcast a node's clients work with. When only its wire form arrived (a compact broadcast), the
    algorithm rebuilds the rest from it and the initial parameters of the node's model."""
    personal = records.get_object(content, "personal_clients")
    own = None
    if personal is not None:
        own = {client: records.get_tree(content, f"personal.{client}") for client in personal}
    wire = records.get_value(content, "wire") if "wire.meta" in content.config_records else None
    if "params.meta" in content.config_records:
        return Broadcast(records.get_tree(content, "params"), records.get_tree(content, "extra"), own, wire)
    if wire is None or worker is None:
        raise ConfigError("the broadcast arrived without parameters and without a wire form to rebuild them from")
    job = records.get_object(content, "job")
    rebuilt = worker.rebuild(wire, job["clients"][0], job["round"])
    return Broadcast(rebuilt.params, rebuilt.extra, own, wire)


def wire_key(wire: Compact) -> str:
    """A digest of a wire form's arrays (the same download twice: one rebuild)."""
    digest = hashlib.sha256()
    for name in sorted(wire.arrays):
        array = wire.arrays[name].detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


_CONFIGS: dict[tuple, RunConfig] = {}  # resolving a config takes ~0.1 s: once per process and run config


def _config(source: ConfigSource, run_config: dict[str, Any], base: Optional[Path]) -> RunConfig:
    if not isinstance(source, (str, Path)):
        return load_config(source, run_config, base)
    key = (str(source), tuple(sorted((k, str(v)) for k, v in run_config.items())), str(base))
    if key not in _CONFIGS:
        _CONFIGS.clear()
        _CONFIGS[key] = load_config(source, run_config, base)
    return _CONFIGS[key]


_WORKERS: dict[tuple, NodeWorker] = {}  # a ClientApp process that lives on (process isolation) builds once


def _worker(cfg: RunConfig, context: Context) -> NodeWorker:
    clients = node_clients(dict(context.node_config), cfg.clients)
    key = (context.run_id, context.node_id, fingerprint(cfg), tuple(clients))
    if key not in _WORKERS:
        if len(_WORKERS) >= 16:  # several nodes in one process (LocalGrid): keep each node's runtime
            _WORKERS.pop(next(iter(_WORKERS)))
        node_cfg = cfg
        if "data-dir" in context.node_config:  # the device's own data path
            node_cfg = dataclasses.replace(cfg, data_dir=str(context.node_config["data-dir"]))
        _WORKERS[key] = NodeWorker(node_cfg, clients)
    return _WORKERS[key]


def handle(source: ConfigSource, base: Optional[Path], message: Message, context: Context) -> Message:
    """One message to this node → its reply (a fedloom error travels back as the reply's ``error`` record)."""
    reply = RecordDict()
    try:
        content = message.content
        cfg = _config(source, dict(context.run_config), base)
        server = records.get_object(content, "server")
        if server["fingerprint"] != fingerprint(cfg):
            raise ConfigError(f"config mismatch between the server (fedloom {server['version']}, config "
                              f"{server['fingerprint']}) and node {context.node_id} (fedloom {__version__}, "
                              f"config {fingerprint(cfg)}): {config_difference(shared_toml(cfg), server['toml'])}")
        worker = _worker(cfg, context)
        kind = message.metadata.message_type
        if kind == HELLO:
            records.put_object(reply, "hello", {"clients": worker.clients, "version": __version__})
        elif kind == TRAIN:
            job = records.get_object(content, "job")
            _test_hook(context, job["round"])
            worker.load_states(context.state)
            started = time.perf_counter()
            worker.train(read_broadcast(content, worker), job["clients"], job["round"], reply)
            worker.save_states(context.state, job["clients"])
            records.put_object(reply, "timing", {"train_s": time.perf_counter() - started})
        elif kind == EVALUATE:
            job = records.get_object(content, "job")
            worker.load_states(context.state)
            sums = worker.evaluate(read_broadcast(content, worker), job["clients"], job["round"], job["split"])
            records.put_object(reply, "sums", sums)
    except Exception as exc:  # noqa: BLE001 — every error goes back to the server as one message
        log.error("fedloom node %s: %s: %s", context.node_id, type(exc).__name__, exc)
        reply = RecordDict()
        records.put_object(reply, "error", error_info(exc))
    return Message(reply, reply_to=message)


def _test_hook(context: Context, round_: int) -> None:
    """Tests of a node lost mid-round: node config ``test-stall-round=R`` writes ``test-marker`` and waits
    before training round R, so that the test can kill this SuperNode while the server waits for it."""
    stall = context.node_config.get("test-stall-round")
    if stall is not None and int(stall) == round_:
        Path(str(context.node_config["test-marker"])).write_text(str(os.getpid()))
        time.sleep(float(context.node_config.get("test-stall-seconds", 60)))


def client_app(config: ConfigSource, base: Optional[Path] = None) -> ClientApp:
    """A Flower ClientApp running ``config``'s algorithm for the clients of the node it is deployed on.
    ``base``: the folder a relative ``fedloom-config`` in the Flower run config is read from."""
    app = ClientApp()
    run = functools.partial(handle, config, base)
    app.query("fedloom_hello")(run)
    app.train("fedloom")(run)
    app.evaluate("fedloom")(run)
    return app
