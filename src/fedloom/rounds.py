"""One round of the star pattern (sample → train the cohort → server step → evaluate) and the evaluation every
pattern shares. Round patterns (fedloom.patterns) call these; run.py owns the loop, the run folder and resume."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from fedloom.algorithms.base import Federation, ServerResult, ServerState
from fedloom.algorithms.tree import tree_allfinite
from fedloom.data.federated import FederatedData
from fedloom.errors import DivergenceError
from fedloom.pipeline.attacks import POISONED_SPLIT
from fedloom.pipeline.context import AGGREGATOR_STATE_KEY, AggregationContext
from fedloom.seeding import numpy_generator

if TYPE_CHECKING:
    from fedloom.run import Experiment


def sample_cohort(num_clients: int, join_ratio: float, seed: int, round_: int,
                  sampler: Optional[Callable[[int, int, int, int], list[int]]] = None) -> list[int]:
    """A uniformly random subset of int(join_ratio·N) clients (at least one), from the round's own stream; or,
    when the threat model gives a ``sampler`` (exact attacker counts), the cohort of that size it draws."""
    size = max(1, int(join_ratio * num_clients + 1e-9))
    if sampler is not None:
        return sampler(num_clients, size, seed, round_)
    if size >= num_clients:
        return list(range(num_clients))
    rng = numpy_generator(seed, round_, -1, "client-sampling")
    return sorted(int(c) for c in rng.choice(num_clients, size=size, replace=False))


def summarize_clients(per_client: dict[int, dict[str, float]], task: Any, prefix: str = "") -> dict[str, float]:
    """Pooled metrics (Σ sums, then ratios) plus the distribution of per-client accuracies."""
    totals: dict[str, float] = {}
    for sums in per_client.values():
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value
    record = {f"{prefix}{k}": v for k, v in task.finalize(totals).items()}
    primary = task.primary_metric
    values = np.array([task.finalize(s)[primary] for s in per_client.values() if s.get("count", 0) > 0])
    if values.size:
        stats = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max(),
                 "p10": np.percentile(values, 10), "median": np.median(values), "p90": np.percentile(values, 90)}
        record.update({f"{prefix}client_{primary}_{k}": float(v) for k, v in stats.items()})
    return record


def evaluate(exp: Experiment, broadcast: Any, round_: int) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    clients = list(range(exp.data.num_clients))
    per_client = exp.engine.evaluate(exp.algorithm, broadcast, clients, round_, split="test")
    record = summarize_clients(per_client, exp.runtime.task)
    record.update(attack_metrics(exp, broadcast, clients, round_))
    if exp.config.eval_train:
        train = exp.engine.evaluate(exp.algorithm, broadcast, clients, round_, split="train")
        record.update(summarize_clients(train, exp.runtime.task, prefix="train_"))
    return record, per_client


def attack_metrics(exp: Experiment, broadcast: Any, clients: list[int], round_: int) -> dict[str, float]:
    """``asr``: the evaluated models' accuracy on the attack's poisoned test split (a backdoor's trigger-stamped
    samples whose true label is not the target, scored against the target), pooled over clients; nothing when
    the run's attack has no such split."""
    if exp.runtime.uploads.eval_view(POISONED_SPLIT) is None:
        return {}
    sums = exp.engine.evaluate(exp.algorithm, broadcast, clients, round_, split=POISONED_SPLIT)
    totals: dict[str, float] = {}
    for client_sums in sums.values():
        for key, value in client_sums.items():
            totals[key] = totals.get(key, 0.0) + value
    return {"asr": exp.runtime.task.finalize(totals)[exp.runtime.task.primary_metric]} if totals else {}


def _rounded(record: dict[str, Any]) -> dict[str, Any]:
    # 10 significant digits: plenty for metrics, and stable text for byte-for-byte comparisons
    return {k: (float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in record.items()}


@dataclass
class RoundOutput:
    server: ServerResult
    record: Optional[dict[str, Any]]  # None when the round was not evaluated
    per_client: Optional[dict[int, dict[str, float]]]
    client_metrics: dict[int, dict[str, float]]
    train_seconds: float
    eval_seconds: float


def step_round(exp: Experiment, server: ServerResult, round_: int, totals: dict[str, int]) -> RoundOutput:
    """One round: sample → train the cohort → server step → (maybe) evaluate. ``totals`` accumulates bytes."""
    t0 = time.perf_counter()
    cohort = round_cohort(exp, round_)
    server, result, bytes_down = train_and_step(exp, server, cohort, round_)
    return finish_round(exp, server, round_, totals, cohort, result.bytes_up, bytes_down, result.client_metrics, t0)


def round_cohort(exp: Experiment, round_: int) -> list[int]:
    cfg = exp.config
    return sample_cohort(exp.data.num_clients, cfg.join_ratio, cfg.seed, round_, exp.runtime.uploads.cohort_sampler)


def train_and_step(exp: Experiment, server: ServerResult, cohort: list[int], round_: int,
                   step: tuple[int, int] = (0, 1)) -> tuple[ServerResult, Any, int]:
    """``cohort`` trains from the broadcast, then one server step on its uploads: (the new server, the engine's
    CohortResult, bytes downloaded). ``step`` = (q, n): this is the round's server step q of n (a sequential
    pattern steps after each client; the star pattern once)."""
    algo = exp.algorithm
    bytes_down = sum(server.broadcast.nbytes(c) for c in cohort)
    result = exp.engine.train_cohort(algo, server.broadcast, cohort, round_)
    actx = aggregation_context(exp, server.state, round_, step)
    uploads = dataclasses.replace(result.uploads, aggregator=exp.runtime.aggregator, context=actx)
    server = keep_aggregator_memory(algo.server_update(without_aggregator_memory(server.state), uploads), actx)
    if not tree_allfinite(server.state.params):
        raise DivergenceError(f"global model has non-finite parameters after round {round_}; lower --lr")
    return server, result, bytes_down


def finish_round(exp: Experiment, server: ServerResult, round_: int, totals: dict[str, int], cohort: list[int],
                 bytes_up: int, bytes_down: int, client_metrics: dict[int, dict[str, float]],
                 t0: float) -> RoundOutput:
    """Count the round's bytes and sample-passes, then (every --eval-every rounds) evaluate and build the record."""
    cfg = exp.config
    totals["up"] = totals.get("up", 0) + bytes_up
    totals["down"] = totals.get("down", 0) + bytes_down
    passes = sample_passes(client_metrics, totals)
    t_train = time.perf_counter() - t0
    if round_ % cfg.eval_every and round_ != cfg.rounds:
        return RoundOutput(server, None, None, client_metrics, t_train, 0.0)
    record, per_client = evaluate(exp, server.broadcast, round_)
    train_losses = [m["train_loss"] for m in client_metrics.values() if "train_loss" in m]
    record = _rounded({"round": round_, **record, "local_train_loss": float(np.mean(train_losses))
                       if train_losses else float("nan"), "clients_sampled": len(cohort),
                       "bytes_up": bytes_up, "bytes_down": bytes_down, "cum_bytes_up": totals["up"],
                       "cum_bytes_down": totals["down"], **stage_bytes(client_metrics), **passes,
                       **attackers_sampled(exp, cohort),
                       **{f"server_{k}": v for k, v in server.metrics.items()}})
    return RoundOutput(server, record, per_client, client_metrics, t_train, time.perf_counter() - t0 - t_train)


def sample_passes(client_metrics: dict[int, dict[str, float]], totals: dict[str, int]) -> dict[str, int]:
    """The round's sample forward/backward passes done and skipped by the local-training seam (InfoBatch),
    accumulated in ``totals``; empty when the run has no local-training component."""
    keys = ("sample_passes", "sample_passes_saved")
    if not any(keys[0] in m for m in client_metrics.values()):
        return {}
    record = {key: int(sum(m.get(key, 0.0) for m in client_metrics.values())) for key in keys}
    for key in keys:
        totals[key] = totals.get(key, 0) + record[key]
    return {**record, **{f"cum_{key}": totals[key] for key in keys}}


def stage_bytes(client_metrics: dict[int, dict[str, float]]) -> dict[str, int]:
    """The round's upload bytes after each transform of the chain, summed over the cohort (in chain order; the
    last equals bytes_up); empty without transforms."""
    keys = list(dict.fromkeys(k for m in client_metrics.values() for k in m if k.startswith("bytes_up_after_")))
    return {key: int(sum(m.get(key, 0.0) for m in client_metrics.values())) for key in keys}


def attackers_sampled(exp: Experiment, cohort: list[int]) -> dict[str, int]:
    """How many of the round's clients are malicious (only when the run has an attack)."""
    uploads = exp.runtime.uploads
    return {} if uploads.attack is None else {"attackers_sampled": sum(c in uploads.malicious for c in cohort)}


def aggregation_context(exp: Experiment, state: ServerState, round_: int,
                        step: tuple[int, int] = (0, 1)) -> AggregationContext:
    """The round's view for the server aggregator: its memory from the server state, the malicious ids."""
    memory = state.extra.get(AGGREGATOR_STATE_KEY, {})
    return AggregationContext(exp.config.seed, round_, state.params, exp.runtime.uploads.malicious,
                              dict(memory), services=exp.runtime, step=step)


def without_aggregator_memory(state: ServerState) -> ServerState:
    """The server state as the algorithm sees it: its own ``extra`` only (never broadcast by accident)."""
    if AGGREGATOR_STATE_KEY not in state.extra:
        return state
    return state.replace(extra={k: v for k, v in state.extra.items() if k != AGGREGATOR_STATE_KEY})


def keep_aggregator_memory(server: ServerResult, actx: AggregationContext) -> ServerResult:
    """The aggregator's memory back into the server state (whatever the algorithm did with ``extra``), its
    metrics into the server's."""
    if actx.state:
        server.state = server.state.replace(extra={**server.state.extra, AGGREGATOR_STATE_KEY: actx.state})
    server.metrics.update(actx.metrics)
    return server


def federation_of(data: FederatedData) -> Federation:
    """Client count and training-set sizes, for servers that keep per-client memory."""
    return Federation(data.num_clients, tuple(int(idx.numel()) for idx in data.train_idx),
                      tuple(data.input_shape), int(data.num_classes), federation_label_counts(data))


def federation_label_counts(data: FederatedData) -> tuple[int, ...]:
    """Training samples per class summed over every client; empty when the targets are not class labels."""
    y = data.dataset.y
    if data.num_classes <= 0 or y.dim() != 1 or y.dtype.is_floating_point:
        return ()
    held = y[torch.cat([idx.to(y.device) for idx in data.train_idx])] if data.train_idx else y[:0]
    return tuple(int(c) for c in torch.bincount(held.long().cpu(), minlength=int(data.num_classes)))


def initial_round(exp: Experiment) -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
    """Server initialisation and the round-0 evaluation of the initial model."""
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    record, per_client = evaluate(exp, server.broadcast, 0)
    return server, _rounded({"round": 0, **record, "bytes_up": 0, "bytes_down": 0}), per_client


