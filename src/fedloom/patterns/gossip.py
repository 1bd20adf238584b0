"""The gossip pattern: no server. Every round (one iteration) each node (client) trains from its own model and
sends a message to its neighbours on the round's ``--topology`` graph; each node then replaces its message by the
W-weighted sum of the messages it holds (its own included) and applies what the algorithm says to it
(``after_gossip``). Mixing reads only the non-zero entries of a node's row of W: its neighbours' messages.

Options (``--gossip.<field>``, ``[gossip]``): the weight rule, the random graphs' parameters, the communication
model (``bandwidth.py``: bandwidth matrix, synchronous communication time = the slowest transfer) and faults
(a failed node neither sends nor receives that iteration; a dropped link loses both its messages; the weight of
a lost message goes to the receiver's own, so W stays symmetric and doubly stochastic).

Metrics: ``accuracy`` pools every node's own model on its own test split; ``avg_model_accuracy`` scores the
average model x̄ on every node; ``consensus_distance`` is (1/n) Σᵢ ‖xᵢ − x̄‖²; ``bytes_up`` counts every message
delivered along a link, each of the wire bytes of that node's encoded upload (``bytes_per_node`` beside it);
``comm_time`` is the simulated communication time (seconds) and ``cum_comm_time`` its running total;
``spectral_gap`` is 1 − |λ₂| of the round's W. The measured wall time of a round (training and mixing) is
``train_seconds`` in timings.jsonl, which keeps metrics.jsonl identical across engines and resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from fedloom.algorithms.base import Algorithm, Broadcast, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_allfinite, tree_clone, tree_map, tree_sq_dist
from fedloom.config import check_fields, hp, make_component
from fedloom.errors import ConfigError, DivergenceError
from fedloom.patterns.bandwidth import bandwidth_matrix, bottleneck, communication_time
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.patterns.topology import GraphSpec, Topology, degrees, make_topology, spectral_gap, weights_of
from fedloom.rounds import RoundOutput, _rounded, evaluate, summarize_clients
from fedloom.seeding import numpy_generator

if TYPE_CHECKING:
    from fedloom.run import Experiment


@dataclass(frozen=True)
class AverageModel(Algorithm):
    """Scores every node with the broadcast (the average model x̄): the evaluation view of a gossip run."""

    def eval_params(self, ctx: Any, broadcast: Broadcast, state: Any) -> Params:
        return broadcast.params


def mix(w: torch.Tensor, messages: list[Tree]) -> list[Tree]:
    """Node i receives Σ_j W_ij m_j over its neighbours j (and itself), summed in float64 in node order, so
    every engine gets the same bits."""
    mixed = []
    for i in range(len(messages)):
        total = tree_map(lambda t: torch.zeros_like(t, dtype=torch.float64), messages[i])
        for j in torch.nonzero(w[i]).flatten().tolist():
            total = tree_map(lambda acc, m, a=float(w[i, j]): acc + a * m.double(), total, messages[j])
        mixed.append(tree_map(lambda t: t.float(), total))
    return mixed


def consensus_distance(models: list[Params]) -> tuple[Params, float]:
    """(x̄, (1/n) Σᵢ ‖xᵢ − x̄‖²)."""
    n = len(models)
    mean = tree_map(lambda *leaves: torch.stack([leaf.double() for leaf in leaves]).mean(dim=0).float(), *models)
    return mean, float(sum(tree_sq_dist(model, mean) for model in models)) / n


def with_faults(w: torch.Tensor, failed: list[int], dropped: list[tuple[int, int]]) -> torch.Tensor:
    """W after lost messages: a failed node's links and the dropped links carry nothing; each lost weight goes
    to the receiver's diagonal (W stays symmetric and doubly stochastic)."""
    w = w.clone()
    lost = [(i, j) for i in failed for j in range(w.shape[0]) if j != i and w[i, j] > 0] + dropped
    for i, j in lost:
        for a, b in ((i, j), (j, i)):
            w[a, a] += w[a, b]
            w[a, b] = 0.0
    return w


@dataclass
class Plan:
    """What a gossip run fixes once: options, topology, bandwidth."""

    options: "Gossip"
    topology: Topology
    bandwidth: Optional[np.ndarray]
    seed: int


@PATTERNS.register("gossip")
@dataclass(frozen=True)
class Gossip(RoundPattern):
    """Serverless rounds: every node trains, then mixes with its --topology neighbours (D-PSGD, CHOCO-SGD,
    DCD-PSGD, GossipFL); options are the mixing weights, random graphs, bandwidth model and faults."""

    weights: str = hp("metropolis", choices=("metropolis", "uniform"),
                      help="mixing weights: metropolis (1/(1+max(d_i,d_j))) or uniform (1/(1+d_max))")
    degree: int = hp(4, ge=1, help="--topology random-regular: every node's degree")
    edge_prob: float = hp(0.3, gt=0, le=1, help="--topology erdos-renyi: probability of each edge")
    bandwidth: str = hp("random", choices=("random", "measured", "file", "none"),
                        help="bandwidth matrix (MB/s): random U[0, bandwidth_max), GossipFL's measured 14 nodes, "
                             "a file, or none (no simulated communication time)")
    bandwidth_file: str = hp("", help="--gossip.bandwidth file: CSV or .npy, n x n")
    bandwidth_max: float = hp(5.0, gt=0, help="--gossip.bandwidth random: upper end of the uniform draw")
    bandwidth_threshold: float = hp(3.0, ge=0, help="--topology saps: B_thres, high-bandwidth pairs exceed it")
    window: int = hp(3, ge=1, help="--topology saps: T_thres, the recent-match graph must stay connected over it")
    failure: float = hp(0.0, ge=0, lt=1, help="probability that a node is down for an iteration")
    drop: float = hp(0.0, ge=0, lt=1, help="probability that a link loses its messages for an iteration")

    def validate(self) -> None:
        check_fields(self)

    def unsupported_hint(self, algorithm: Any) -> str:
        return "gossip needs a decentralized algorithm (e.g. dpsgd); this one needs a server (--pattern star)"

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        super().check(cfg, algorithm, num_clients)
        if cfg.join_ratio != 1.0:
            raise ConfigError("--pattern gossip: every node trains every round; leave --join-ratio at 1")
        plan = self.plan(cfg, num_clients)
        varying, faulty = plan.topology.time_varying, plan.options.failure > 0 or plan.options.drop > 0
        name = algorithm.registry_name
        if getattr(algorithm, "static_mixing", False) and (varying or faulty):
            raise ConfigError(f"{name} keeps running sums of its neighbours' compressed messages over a fixed W: "
                              f"use a static --topology and leave --gossip.failure/--gossip.drop at 0")
        if getattr(algorithm, "needs_matching", False) and not varying:
            raise ConfigError(f"{name} exchanges with one peer per iteration: use --topology saps (GossipFL's "
                              f"bandwidth-aware matching) or --topology matching")

    def plan(self, cfg: Any, n: int) -> Plan:
        """The configured options, topology and bandwidth (built once per run and kept on the pattern)."""
        cached = getattr(self, "_plan", None)
        if cached is not None and cached.topology.n == n and cached.seed == cfg.seed:
            return cached
        options = make_component(PATTERNS, "gossip", dict(cfg.options.get("gossip", {})))
        bandwidth = bandwidth_matrix(options.bandwidth, n, cfg.seed, options.bandwidth_file, options.bandwidth_max)
        spec = GraphSpec(degree=options.degree, edge_prob=options.edge_prob, seed=cfg.seed, bandwidth=bandwidth,
                         bandwidth_threshold=options.bandwidth_threshold, window=options.window)
        plan = Plan(options, make_topology(cfg.topology, n, spec), bandwidth, cfg.seed)
        object.__setattr__(self, "_plan", plan)  # a cache, not an option
        return plan

    def round_matrix(self, plan: Plan, round_: int) -> tuple[torch.Tensor, dict[str, float]]:
        """This round's W (faults applied) and its description for the metrics."""
        neighbours = plan.topology.graph(round_)
        w = weights_of(neighbours, plan.options.weights)
        rng = numpy_generator(plan.seed, round_, -1, "gossip-faults")
        n = len(neighbours)
        failed = [i for i in range(n) if rng.random() < plan.options.failure] if plan.options.failure else []
        edges = [(i, j) for i in range(n) for j in sorted(neighbours[i]) if i < j]
        dropped = [e for e in edges if rng.random() < plan.options.drop] if plan.options.drop else []
        if failed or dropped:
            w = with_faults(w, failed, dropped)
        info = {"spectral_gap": spectral_gap(w), "failed_nodes": len(failed), "dropped_links": len(dropped),
                "bottleneck_bandwidth": bottleneck(neighbours, plan.bandwidth)}
        return w, info

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        plan = self.plan(exp.config, exp.data.num_clients)
        params = tree_clone(exp.runtime.init_params)
        server = ServerResult(ServerState(params=params), Broadcast(params=params), {"consensus_distance": 0.0})
        record, per_client = evaluate(exp, server.broadcast, 0)
        record.update(self._average_model_record(exp, server.broadcast, 0))
        gap = spectral_gap(weights_of(plan.topology.graph(1), plan.options.weights))
        return server, _rounded({"round": 0, **record, "bytes_up": 0, "bytes_down": 0, "consensus_distance": 0.0,
                                 "spectral_gap": gap, "comm_time": 0.0, "cum_comm_time": 0.0}), per_client

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, Any]) -> RoundOutput:
        cfg, algo, nodes = exp.config, exp.algorithm, list(range(exp.data.num_clients))
        t0 = time.perf_counter()
        plan = self.plan(cfg, len(nodes))
        w, info = self.round_matrix(plan, round_)
        broadcast = self._broadcast(server, plan, w)
        result = exp.engine.train_cohort(algo, broadcast, nodes, round_)
        sent = {cid: upload for cid, upload, _ in result.uploads.all()}
        mixed = mix(w, [sent[i] for i in nodes])
        states = {cid: exp.runtime.uploads.split(stored)[0] for cid, stored in exp.engine.client_states()}
        new_states = [algo.after_gossip(states.get(i), mixed[i]) for i in nodes]
        exp.engine.update_client_states(list(zip(nodes, new_states)))
        average, distance = consensus_distance([algo.node_params(s) for s in new_states])
        if not tree_allfinite(average):
            raise DivergenceError(f"node models have non-finite parameters after round {round_}; lower --lr")
        message_bytes = result.bytes_up // len(nodes)  # every node's message has the same size
        links = degrees(w)
        sent_bytes = sum(links) * message_bytes
        transfers = [(i, j, message_bytes) for i in nodes for j in torch.nonzero(w[i]).flatten().tolist() if j != i]
        comm_time = communication_time(transfers, plan.bandwidth)
        totals["up"] = totals.get("up", 0) + sent_bytes
        totals["down"] = totals.get("down", 0) + sent_bytes  # every message delivered is received
        totals["comm_time"] = totals.get("comm_time", 0.0) + comm_time
        state = ServerState(params=average, round=server.state.round + 1)
        server = ServerResult(state, Broadcast(params=average), {"consensus_distance": distance})
        t_train = time.perf_counter() - t0
        if round_ % cfg.eval_every and round_ != cfg.rounds:
            return RoundOutput(server, None, None, result.client_metrics, t_train, 0.0)
        record, per_client = evaluate(exp, server.broadcast, round_)
        record.update(self._average_model_record(exp, server.broadcast, round_))
        losses = [m["train_loss"] for m in result.client_metrics.values() if "train_loss" in m]
        record = _rounded({"round": round_, **record, "local_train_loss": sum(losses) / len(losses) if losses
                           else float("nan"), "clients_sampled": len(nodes), "bytes_up": sent_bytes,
                           "bytes_down": sent_bytes, "bytes_per_node": sent_bytes // len(nodes),
                           "message_bytes": message_bytes, "cum_bytes_up": totals["up"],
                           "cum_bytes_down": totals["down"], "consensus_distance": distance,
                           "comm_time": comm_time, "cum_comm_time": totals["comm_time"],
                           **info, **_algorithm_metrics(result.client_metrics)})
        return RoundOutput(server, record, per_client, result.client_metrics, t_train,
                           time.perf_counter() - t0 - t_train)

    @staticmethod
    def _broadcast(server: ServerResult, plan: Plan, w: torch.Tensor) -> Broadcast:
        """The average model, and for one-peer topologies every node's peer this iteration (itself when it has
        none), which pair-wise algorithms (GossipFL) use to agree on shared randomness."""
        if not plan.topology.time_varying:
            return server.broadcast
        off = w.clone()
        off.fill_diagonal_(0)
        peer = torch.where(off.sum(dim=1) > 0, off.argmax(dim=1), torch.arange(w.shape[0]))
        return Broadcast(params=server.broadcast.params, extra={"peer": peer})

    @staticmethod
    def _average_model_record(exp: "Experiment", broadcast: Broadcast, round_: int) -> dict[str, float]:
        clients = list(range(exp.data.num_clients))
        per_client = exp.engine.evaluate(AverageModel(), broadcast, clients, round_, split="test")
        summary = summarize_clients(per_client, exp.runtime.task)
        primary = exp.runtime.task.primary_metric
        return {f"avg_model_{primary}": summary[primary], "avg_model_loss": summary.get("loss", float("nan"))}


def _algorithm_metrics(client_metrics: dict[int, dict[str, float]]) -> dict[str, float]:
    """Means of the algorithm's own per-node numbers (``gossip_*`` keys, e.g. a compression error)."""
    keys = sorted({k for m in client_metrics.values() for k in m if k.startswith("gossip_")})
    return {k: float(np.mean([m[k] for m in client_metrics.values() if k in m])) for k in keys}
