"""The gossip pattern: no server. Every round each node (client) trains from its own model and sends a message
to its neighbours on the ``--topology`` graph; each node then replaces its model by the W-weighted average of
the messages it holds (its own included) and applies what the algorithm says to it (``after_gossip``).

Metrics: ``accuracy`` pools every node's own model on its own test split; ``avg_model_accuracy`` scores the
average model x̄ on every node; ``consensus_distance`` is (1/n) Σᵢ ‖xᵢ − x̄‖²; bytes are per message sent along
every edge (``bytes_up``), with ``bytes_per_node`` beside it. Every node takes part in every round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from fedloom.algorithms.base import Algorithm, Broadcast, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_allfinite, tree_clone, tree_map, tree_sq_dist
from fedloom.errors import ConfigError, TrainingError
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.patterns.topology import degrees, mixing_matrix
from fedloom.rounds import RoundOutput, _rounded, evaluate, summarize_clients

if TYPE_CHECKING:
    from fedloom.run import Experiment


@dataclass(frozen=True)
class AverageModel(Algorithm):
    """Scores every node with the broadcast (the average model x̄): the evaluation view of a gossip run."""

    def eval_params(self, ctx: Any, broadcast: Broadcast, state: Any) -> Params:
        return broadcast.params


def mix(w: torch.Tensor, messages: list[Tree]) -> list[Tree]:
    """Node i receives Σ_j W_ij m_j (summed in float64 in node order, so every engine gets the same bits)."""
    n = len(messages)
    mixed = []
    for i in range(n):
        row = [(float(w[i, j]), messages[j]) for j in range(n) if w[i, j] != 0]
        total = tree_map(lambda t: torch.zeros_like(t, dtype=torch.float64), messages[i])
        for weight, message in row:
            total = tree_map(lambda acc, m, a=weight: acc + a * m.double(), total, message)
        mixed.append(tree_map(lambda t: t.float(), total))
    return mixed


def consensus_distance(models: list[Params]) -> tuple[Params, float]:
    """(x̄, (1/n) Σᵢ ‖xᵢ − x̄‖²)."""
    n = len(models)
    mean = tree_map(lambda *leaves: torch.stack([leaf.double() for leaf in leaves]).mean(dim=0).float(), *models)
    return mean, float(sum(tree_sq_dist(model, mean) for model in models)) / n


@PATTERNS.register("gossip")
class Gossip(RoundPattern):
    def unsupported_hint(self, algorithm: Any) -> str:
        return "gossip needs a decentralized algorithm (e.g. dpsgd); this one needs a server (--pattern star)"

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        super().check(cfg, algorithm, num_clients)
        if cfg.join_ratio != 1.0:
            raise ConfigError("--pattern gossip: every node trains every round; leave --join-ratio at 1")
        mixing_matrix(cfg.topology, num_clients)

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        params = tree_clone(exp.runtime.init_params)
        server = ServerResult(ServerState(params=params), Broadcast(params=params), {"consensus_distance": 0.0})
        record, per_client = evaluate(exp, server.broadcast, 0)
        record.update(self._average_model_record(exp, server.broadcast, 0))
        return server, _rounded({"round": 0, **record, "bytes_up": 0, "bytes_down": 0, "consensus_distance": 0.0}), per_client

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> RoundOutput:
        cfg, algo, nodes = exp.config, exp.algorithm, list(range(exp.data.num_clients))
        w = mixing_matrix(cfg.topology, len(nodes))
        t0 = time.perf_counter()
        result = exp.engine.train_cohort(algo, server.broadcast, nodes, round_)
        sent = {cid: upload for cid, upload, _ in result.uploads.all()}
        mixed = mix(w, [sent[i] for i in nodes])
        states = {cid: exp.runtime.uploads.split(stored)[0] for cid, stored in exp.engine.client_states()}
        new_states = [algo.after_gossip(states.get(i), mixed[i]) for i in nodes]
        exp.engine.update_client_states(list(zip(nodes, new_states)))
        average, distance = consensus_distance([algo.node_params(s) for s in new_states])
        if not tree_allfinite(average):
            raise TrainingError(f"node models have non-finite parameters after round {round_}; lower --lr")
        message_bytes = result.bytes_up // len(nodes)  # every node sends one message of the same model
        sent_bytes = sum(degrees(w)) * message_bytes
        totals["up"] = totals.get("up", 0) + sent_bytes
        totals["down"] = totals.get("down", 0) + sent_bytes  # every message sent is received
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
                           "cum_bytes_up": totals["up"], "cum_bytes_down": totals["down"],
                           "consensus_distance": distance})
        return RoundOutput(server, record, per_client, result.client_metrics, t_train,
                           time.perf_counter() - t0 - t_train)

    @staticmethod
    def _average_model_record(exp: "Experiment", broadcast: Broadcast, round_: int) -> dict[str, float]:
        clients = list(range(exp.data.num_clients))
        per_client = exp.engine.evaluate(AverageModel(), broadcast, clients, round_, split="test")
        summary = summarize_clients(per_client, exp.runtime.task)
        primary = exp.runtime.task.primary_metric
        return {f"avg_model_{primary}": summary[primary], "avg_model_loss": summary.get("loss", float("nan"))}
