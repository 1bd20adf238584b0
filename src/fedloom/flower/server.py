"""The server side: a Flower ServerApp that runs fedloom's own round loop with the ``flower`` engine.

The round loop (sampling, ``server_update``, aggregators, evaluation, the run folder) is the one ``fedloom run``
uses; only the engine differs. ``FlowerEngine`` is the sharded engine's idea (``engines/sharded.py``: clients
sticky to workers, each worker trains its share) with the SuperNodes as workers and Flower's Grid as the
transport: it learns which node holds which clients (a hello message), sends each node the broadcast and its
share of the cohort as Flower records, decodes the uploads that come back in their wire form and adds them to
one accumulator in cohort order (as the serial engine does, so the sums are the same), and counts the bytes of
the arrays that arrived. A node that does not answer within ``round-timeout`` (or that Flower reports as
unreachable) is lost: with ``on-lost = "drop"`` (default) the round finishes with the others and the node's
clients are left out from then on; with ``"fail"`` the run stops with one TrainingError. The server state is
never touched by a lost node.

Beutel et al., "Flower: A Friendly Federated Learning Research Framework" (2020): ServerApp, Grid, Message API.
"""

from __future__ import annotations

import contextvars
import json
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedloom import __version__
from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.config import RunConfig
from fedloom.engines.base import ENGINE_OPTIONS, ENGINES, CohortResult, Engine, EngineOptions
from fedloom.engines.context import Runtime
from fedloom.errors import ConfigError, TrainingError
from fedloom.flower import records
from fedloom.flower.common import (EVALUATE, HELLO, TRAIN, ConfigSource, fingerprint, load_config,
                                   raise_node_error, shared_toml)
from fedloom.pipeline.wire import decoded

log = logging.getLogger("fedloom.flower")


@dataclass(frozen=True)
class FlowerSettings:
    """How the server waits for nodes (keys of the Flower run config: ``round-timeout``, ``connect-timeout``,
    ``on-lost``)."""

    round_timeout: float = 600.0
    connect_timeout: float = 120.0
    on_lost: str = "drop"

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "FlowerSettings":
        settings = cls(float(run_config.get("round-timeout", cls.round_timeout)),
                       float(run_config.get("connect-timeout", cls.connect_timeout)),
                       str(run_config.get("on-lost", cls.on_lost)))
        if settings.on_lost not in ("drop", "fail"):
            raise ConfigError(f"on-lost must be drop or fail, got {settings.on_lost!r}")
        if settings.round_timeout <= 0 or settings.connect_timeout <= 0:
            raise ConfigError("round-timeout and connect-timeout must be > 0 seconds")
        return settings


@dataclass
class Session:
    """What the ServerApp hands the engine it cannot get from a RunConfig: the Grid, the settings, the
    fingerprint the nodes must match, and the measurements the engine records."""

    grid: Grid
    settings: FlowerSettings
    config: RunConfig
    stats: list[dict[str, Any]] = field(default_factory=list)


_SESSION: contextvars.ContextVar[Optional[Session]] = contextvars.ContextVar("fedloom_flower", default=None)


@ENGINE_OPTIONS.register("flower")
@dataclass(frozen=True)
class FlowerOptions:
    pass


@ENGINES.register("flower")
class FlowerEngine(Engine):
    """Clients on Flower SuperNodes, reached through the ServerApp's Grid."""

    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        super().__init__(runtime, options)
        session = _SESSION.get()
        if session is None:
            raise ConfigError("--engine flower runs only inside a fedloom Flower ServerApp "
                              "(fedloom flower new DIR, then flwr run DIR)")
        self.session = session
        self.server_info = {"fingerprint": fingerprint(session.config), "version": __version__,
                            "toml": shared_toml(session.config)}
        self.owner: dict[int, int] = {}  # client → node id
        self.lost: set[int] = set()
        self._connect()

    # ------------------------------------------------------------------ nodes
    def _connect(self) -> None:
        """Ask every node which clients it holds, until each client of the run has exactly one node."""
        num_clients = self.runtime.data.num_clients
        deadline = time.monotonic() + self.session.settings.connect_timeout
        asked: set[int] = set()
        while True:
            new = [n for n in self.session.grid.get_node_ids() if n not in asked]
            asked.update(new)
            for node, reply in self._exchange(HELLO, {n: RecordDict() for n in new}, 0, strict=True).items():
                for client in records.get_object(reply, "hello")["clients"]:
                    if client in self.owner:
                        raise ConfigError(f"client {client} is held by two nodes ({self.owner[client]} and {node}); "
                                          f"give each node its own partition-id")
                    self.owner[client] = node
            missing = [c for c in range(num_clients) if c not in self.owner]
            if not missing:
                log.info("fedloom: %d clients on %d nodes", num_clients, len(set(self.owner.values())))
                return
            if time.monotonic() > deadline:
                waited = self.session.settings.connect_timeout
                raise ConfigError(f"no node holds clients {missing[:10]} after {waited:g} s ({len(asked)} nodes "
                                  f"connected); start a SuperNode for each partition")
            time.sleep(0.5)

    def _exchange(self, kind: str, contents: dict[int, RecordDict], round_: int,
                  strict: bool = False) -> dict[int, RecordDict]:
        """Send each node its content, return the replies by node; nodes that did not answer are lost."""
        if not contents:
            return {}
        grid = self.session.grid
        messages = []
        for node, content in contents.items():
            records.put_object(content, "server", self.server_info)
            messages.append(Message(content, dst_node_id=node, message_type=kind, group_id=str(round_)))
        timeout = self.session.settings.connect_timeout if strict else self.session.settings.round_timeout
        replies: dict[int, RecordDict] = {}
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                continue  # Flower could not deliver or run it: the node is lost (below)
            error = records.get_object(reply.content, "error")
            if error is not None:
                raise_node_error(error, node)
            replies[node] = reply.content
        for node in set(contents) - set(replies):
            self._lose(node, round_, kind, strict)
        return replies

    def _lose(self, node: int, round_: int, kind: str, strict: bool) -> None:
        clients = sorted(c for c, n in self.owner.items() if n == node)
        what = f"node {node} (clients {clients}) did not answer {kind} in round {round_}"
        if strict or self.session.settings.on_lost == "fail":
            raise TrainingError(f"{what} within the timeout; the server state is kept in the run folder")
        self.lost.add(node)
        if set(self.owner.values()) <= self.lost:
            raise TrainingError(f"{what}, and no node is left; the server state is kept in the run folder (a "
                                f"longer round-timeout helps nodes that are slow rather than gone)")
        log.warning("fedloom: %s; the round goes on without it", what)

    def _shares(self, clients: Iterable[int]) -> dict[int, list[int]]:
        shares: dict[int, list[int]] = {}
        for client in clients:
            node = self.owner[client]
            if node not in self.lost:
                shares.setdefault(node, []).append(client)
        return shares

    # ------------------------------------------------------------------ engine interface
    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        started = time.perf_counter()
        contents = {}
        down = 0
        for node, clients in self._shares(cohort).items():
            contents[node] = broadcast_content(broadcast, clients, algorithm.compact_broadcast())
            records.put_object(contents[node], "job", {"clients": clients, "round": round_})
            down += records.wire_bytes(contents[node])
        replies = self._exchange(TRAIN, contents, round_)
        accumulator = UploadAccumulator(keep_all=self.runtime.keep_all(algorithm))
        metrics: dict[int, dict[str, float]] = {}
        up = serialized = meta = 0
        node_seconds = {}
        for node, reply in replies.items():
            serialized += records.record_bytes(reply)
            meta += records.meta_bytes(reply)
            node_seconds[node] = records.get_object(reply, "timing")["train_s"]
        by_client = {c: (node, records.get_object(r, "clients")) for node, r in replies.items()
                     for c in records.get_object(r, "clients")}
        for client in cohort:  # cohort order: the serial engine's order of additions
            if client not in by_client:
                continue
            reply = replies[by_client[client][0]]
            info = by_client[client][1][client]
            up += records.arrays_nbytes(reply.array_records[f"up.{client}"])
            message = records.get_value(reply, f"up.{client}")
            accumulator.add(client, decoded(message), info["weight"])
            metrics[client] = info["metrics"]
        self.session.stats.append({"round": round_, "wall_s": time.perf_counter() - started, "bytes_up_wire": up,
                                   "bytes_up_serialized": serialized, "bytes_meta_up": meta,
                                   "bytes_down_sent": down, "node_train_s": node_seconds,
                                   "clients_trained": len(metrics), "lost_nodes": sorted(self.lost)})
        return CohortResult(accumulator.finish(), dict(sorted(metrics.items())), up)

    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        started = time.perf_counter()
        contents = {}
        for node, owned in self._shares(clients).items():
            contents[node] = broadcast_content(broadcast, owned, algorithm.compact_broadcast())
            records.put_object(contents[node], "job", {"clients": owned, "round": round_, "split": split})
        results: dict[int, dict[str, float]] = {}
        for reply in self._exchange(EVALUATE, contents, round_).values():
            results.update(records.get_object(reply, "sums"))
        stats = self.session.stats
        if stats and stats[-1]["round"] == round_:
            stats[-1]["eval_wall_s"] = stats[-1].get("eval_wall_s", 0.0) + time.perf_counter() - started
        return dict(sorted(results.items()))

    def client_states(self) -> Iterator[tuple[int, Tree]]:
        return iter(())  # they stay on the nodes (checkpoints are refused before the run, see run_server)

    def restore_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        raise ConfigError("a Flower run cannot restore client states: they live on the nodes")


def broadcast_content(broadcast: Broadcast, clients: list[int], compact: bool = False) -> RecordDict:
    """A broadcast as records for one node: the shared part once (only its wire form when ``compact``: the
    algorithm's clients rebuild the rest, ``Algorithm.rebuild_broadcast``), the personal downloads of its
    clients only."""
    content = RecordDict()
    if compact and broadcast.wire is None:
        raise TrainingError("the algorithm declares a compact broadcast but its Broadcast has no wire form")
    if not compact:
        records.put_tree(content, "params", broadcast.params)
        records.put_tree(content, "extra", broadcast.extra)
    if broadcast.wire is not None:
        records.put_value(content, "wire", broadcast.wire)
    if broadcast.personal is not None:
        own = [c for c in clients if c in broadcast.personal]
        records.put_object(content, "personal_clients", own)
        for client in own:
            records.put_tree(content, f"personal.{client}", broadcast.personal[client])
    return content


# ------------------------------------------------------------------------------------------------ the app
def check_flower_config(cfg: RunConfig) -> None:
    """What the Flower path cannot do, refused before training."""
    if cfg.pattern not in (None, "star"):
        raise ConfigError(f"--pattern {cfg.pattern} is not supported over Flower (nodes do not talk to each "
                          f"other); use the star pattern")
    if cfg.checkpoint_every:
        raise ConfigError("--checkpoint-every is not supported over Flower: client states stay on the nodes")
    from fedloom.algorithms import ALGORITHMS
    from fedloom.config import component_options

    component_options(ALGORITHMS, cfg.algorithm, cfg).check_deployable()  # options that need the simulation


def run_server(config: ConfigSource, grid: Grid, run_config: Optional[dict[str, Any]] = None,
               base: Optional[Path] = None, callbacks: Iterable[Any] = ()) -> Any:
    """Run ``config`` with its clients on the Grid's nodes; returns fedloom's RunResult (with ``flower_stats``,
    the per-round measurements, attached; also written to ``flower.json`` in the run folder when there is one).
    ``callbacks``: as for ``fedloom.run``."""
    from fedloom.api import run

    run_config = dict(run_config or {})
    cfg = load_config(config, run_config, base)
    check_flower_config(cfg)
    session = Session(grid, FlowerSettings.from_run_config(run_config), cfg)
    token = _SESSION.set(session)
    try:
        out = run_config.get("out") or None
        result = run(dataclasses.replace(cfg, engine="flower", out=None), out=out, callbacks=callbacks)
    finally:
        _SESSION.reset(token)
    result.flower_stats = session.stats
    if out:
        (Path(out) / "flower.json").write_text(json.dumps(session.stats, indent=1) + "\n")
    return result


def server_app(config: ConfigSource, base: Optional[Path] = None) -> ServerApp:
    """A Flower ServerApp running ``config`` (a fedloom TOML path, dict or RunConfig) over the connected nodes.
    ``base``: the folder a relative ``fedloom-config`` in the Flower run config is read from."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        result = run_server(config, grid, dict(context.run_config), base)
        last = result.records[-1] if result.records else {}
        log.info("fedloom: done, %s", {k: v for k, v in last.items() if k in ("round", "accuracy", "loss")})

    return app
