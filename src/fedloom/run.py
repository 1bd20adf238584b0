"""Running one experiment: resolve the config, build data/model/algorithm/engine, loop over rounds, record.

One round: sample a cohort → the engine runs ``client_update`` for it → ``server_update`` → evaluate every
client on its own test split with the algorithm's ``eval_params`` → append to metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from fedloom.algorithms import ALGORITHMS, Algorithm
from fedloom.checkpoint import CHECKPOINT_NAME, RunProgress, open_for_resume, remove_checkpoint, save_checkpoint
from fedloom.config import RunConfig, component_options
from fedloom.config_checks import check_option_namespaces, to_toml, validate_numbers
from fedloom.data.base import DATASETS
from fedloom.data.federated import FederatedData
from fedloom.data.summary import write_partition_report
from fedloom.engines import ENGINES, Engine
from fedloom.engines.build import (BuiltRuntime, build_engine, build_models, build_runtime,  # noqa: F401
                                   check_store_dir, client_store, engine_options, federation_architectures,
                                   load_data, model_names, partition_spec, resolve_device, store_root)
from fedloom.engines.context import Runtime
from fedloom.engines.heap import configure_heap
from fedloom.engines.options import resolve_engine_options
from fedloom.errors import ConfigError, DivergenceError
from fedloom.models import MODELS
from fedloom.models.lm import hf_model_spelling
from fedloom.models.families.federation import client_labels, resolve_family
from fedloom.patterns import PATTERNS, RoundPattern
from fedloom.patterns.star import Star
from fedloom.pipeline.build import build_pipeline
from fedloom.plots import accuracy_curve, preload_in_background
from fedloom.seams import known_namespaces, resolve_seams, seam_namespaces, seam_options
from fedloom.registry import canonical
from fedloom.provenance import code_provenance, provenance
from fedloom.tracking import RunFolder
from fedloom.trackers import TrackerGroup, make_trackers

import fedloom.data.datasets  # noqa: F401  (registration)
import fedloom.data.partitioners  # noqa: F401  (registration)


@dataclass
class Experiment:
    """Everything a run needs, built from a resolved config."""

    config: RunConfig
    data: FederatedData
    algorithm: Algorithm
    engine: Engine
    runtime: Runtime
    pattern: RoundPattern = field(default_factory=Star)  # how a round moves information (fedloom.patterns)


# ------------------------------------------------------------------------------------------------ building
# The building floor (device, data, models, store, runtime, engine) is fedloom.engines.build; its names stay
# importable from here.
def resolve_config(cfg: RunConfig) -> RunConfig:
    """Validate names and numbers and fill in every default, so the run folder holds the full config."""
    cfg = hf_model_spelling(cfg)  # --model hf:PATH = --model hf --hf.path PATH
    cfg = resolve_engine_options(cfg)  # --processes.workers ... onto the fields that store them (--workers ...)
    validate_numbers(cfg)
    algorithm = canonical(ALGORITHMS.get(cfg.algorithm).registry_name)
    dataset = canonical(DATASETS.get(cfg.dataset).registry_name)
    ENGINES.get(cfg.engine)
    from fedloom.data.partition_io import partition_name
    partition = partition_name(cfg, DATASETS.get(dataset).default_partition)  # 'file' with --partition-file
    from fedloom.data.base import PARTITIONERS  # partitioners are registered by import above
    partition = PARTITIONERS.get(partition).registry_name
    model = ",".join(model_names(cfg.model)) or None
    seams = resolve_seams(cfg)
    seam_tables = seam_options(seams)  # validated first: "--attack.fraction without --attack" says so
    family = resolve_family(cfg)  # --model-family: its name and options checked (models/families)
    selected = [algorithm, dataset] + model_names(model) + ([family] if family else []) + seam_namespaces(seams)
    check_option_namespaces(cfg, selected + [canonical(m) for m in MODELS.names()], known_namespaces())
    options = {algorithm: dataclasses.asdict(component_options(ALGORITHMS, algorithm, cfg)),
               dataset: dataclasses.asdict(component_options(DATASETS, dataset, cfg)), **seam_tables}
    build_pipeline(seams, cfg.clients)  # the transform chain's order and the attack, checked before any data
    if len(set(model_names(model))) > 1 and ALGORITHMS.get(algorithm).shared_architecture:
        raise ConfigError(f"--model {model} gives clients different architectures, but {algorithm} exchanges "
                          f"model parameters, which needs one architecture for every client; use one model, or "
                          f"an algorithm for heterogeneous models (e.g. local)")
    if family and len(set(client_labels(cfg))) > 1 and ALGORITHMS.get(algorithm).shared_architecture:
        raise ConfigError(f"--model-family {family} gives clients different architectures, but {algorithm} "
                          f"exchanges model parameters, which needs one architecture for every client; use an "
                          f"algorithm for heterogeneous models (e.g. local, fedproto)")
    PATTERNS.get(seams.pattern)().check(seams, component_options(ALGORITHMS, algorithm, cfg), cfg.clients)
    out = cfg.out or f"runs/{algorithm}-{dataset}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return dataclasses.replace(seams, algorithm=algorithm, dataset=dataset, partition=partition, model=model,
                               model_family=family, out=out, options={**cfg.options, **options})


def build_experiment(cfg: RunConfig, data: FederatedData, device: torch.device) -> Experiment:
    built = build_runtime(cfg, data, device)
    cfg, algorithm = built.config, built.algorithm
    pattern = PATTERNS.get(cfg.pattern)()
    pattern.check(cfg, algorithm, data.num_clients)
    engine = build_engine(cfg, built.runtime)
    return Experiment(cfg, data, algorithm, engine, built.runtime, pattern)


# ------------------------------------------------------------------------------------------------ rounds
# one round of the star pattern and the evaluation live in fedloom.rounds (re-exported here)
from fedloom.rounds import (RoundOutput, _rounded, evaluate, federation_of, initial_round, sample_cohort,  # noqa: E402
                            step_round, summarize_clients)


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class RunOutcome:
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    folder: Optional[Path]  # None for a run kept in memory (fedloom.api.run(out=None))
    clients: list[dict[str, Any]] = field(default_factory=list)  # clients.csv's rows
    server: Any = None  # the final ServerResult (server state and last broadcast)
    config: Optional[RunConfig] = None  # the resolved config the run used


def wants_stop(progress: Optional[Callable[[int, dict], Any]], round_: int, record: dict[str, Any]) -> bool:
    """Call the per-round callback; a callback that returns False asks the run to end after this round."""
    return progress is not None and progress(round_, record) is False


def start_progress(exp: Experiment, folder: RunFolder) -> RunProgress:
    """A fresh run: server initialisation and the round-0 evaluation, written to metrics.jsonl."""
    server, record, per_client = exp.pattern.start(exp)
    folder.append_jsonl("metrics.jsonl", record)
    return RunProgress(server, 0, [record], per_client, {}, {"up": 0, "down": 0})


def run_rounds(exp: Experiment, folder: RunFolder, progress: Optional[Callable[[int, dict], Any]],
               start: RunProgress, stopped: bool = False) -> RunOutcome:
    """Rounds ``start.round + 1 .. cfg.rounds``, checkpointing every ``cfg.checkpoint_every`` rounds, then
    clients.csv, the plot and the summary. A ``progress`` callback that returns False ends the run after the
    round it was called for (``stopped``: it already did so for the initial evaluation); the summary then
    records the rounds actually run and ``stopped_early``."""
    cfg, task = exp.config, exp.runtime.task
    # this process's code, taken when it started (prepare_experiment), for every checkpoint it writes
    state = dataclasses.replace(start, code=[*start.code, {"from_round": start.round + 1, **code_provenance()}])
    started = time.perf_counter()
    if folder.path is not None:  # the accuracy figure's imports, off the critical path
        preload_in_background()
    diverged: Optional[dict[str, Any]] = None
    for round_ in range(state.round + 1, cfg.rounds + 1):
        if stopped:
            break
        try:
            out = exp.pattern.step(exp, state.server, round_, state.totals)
        except DivergenceError as exc:
            if cfg.on_divergence != "record":
                raise
            diverged = record_divergence(exp, folder, state, round_, exc)
            wants_stop(progress, round_, state.records[-1])  # trackers and callbacks see the last record too
            break
        state.server, state.round = out.server, round_
        state.last_train.update(out.client_metrics)
        folder.append_jsonl("timings.jsonl", {"round": round_, "train_seconds": round(out.train_seconds, 4),
                                              "eval_seconds": round(out.eval_seconds, 4),
                                              **getattr(exp.engine, "round_stats", dict)()})  # (ray: idle fraction)
        if out.record is not None:
            state.records.append(out.record)
            state.per_client = out.per_client
            folder.append_jsonl("metrics.jsonl", out.record)
            stopped = wants_stop(progress, round_, out.record)
        if cfg.checkpoint_every and round_ % cfg.checkpoint_every == 0 and round_ < cfg.rounds and not stopped:
            elapsed = state.wall_seconds + time.perf_counter() - started
            save_checkpoint(folder.path, cfg, dataclasses.replace(state, wall_seconds=elapsed),
                            exp.engine.client_states())
    wall = state.wall_seconds + time.perf_counter() - started
    records, per_client, last_train, totals = state.records, state.per_client, state.last_train, state.totals
    clients = write_client_table(exp, folder, per_client, last_train)
    primary = task.primary_metric
    if folder.path is not None:  # a run kept in memory draws nothing
        accuracy_curve(records, folder.path / "accuracy.png", f"{cfg.algorithm} on {cfg.dataset} "
                       f"({cfg.partition}, {cfg.clients} clients, seed {cfg.seed})")
    best = max(records, key=lambda r: r[primary])
    summary = {"best_accuracy": best[primary], "best_round": best["round"], "final_accuracy": records[-1][primary],
               "final_loss": records[-1].get("loss"), "rounds": state.round, "wall_seconds": round(wall, 3),
               "algorithm": cfg.algorithm, "dataset": cfg.dataset, "partition": cfg.partition, "model": cfg.model,
               **({"model_family": cfg.model_family} if cfg.model_family else {}),
               "clients": cfg.clients, "seed": cfg.seed, "engine": cfg.engine, "threads": cfg.threads,
               "device": str(exp.runtime.device), "total_bytes_up": totals["up"],
               "total_bytes_down": totals["down"], "partition_hash": exp.data.partition_hash,
               "provenance": {**provenance(exp.runtime.device, cfg.threads),
                              # a resumed run: the code of every process that trained it, from its first round
                              **({"code_segments": state.code} if len(state.code) > 1 else {})}}
    summary.update({k: v for k, v in records[-1].items() if k.startswith("server_dp_")})  # privacy spent (ε, δ)
    if "sample_passes" in totals:  # the local-training seam's compute saving (InfoBatch)
        done, saved = totals["sample_passes"], totals["sample_passes_saved"]
        summary.update(sample_passes=done, sample_passes_saved=saved,
                       sample_passes_saved_fraction=round(saved / max(done + saved, 1), 6))
    if diverged is not None:
        summary.update(diverged=diverged, rounds_planned=cfg.rounds)
    elif state.round < cfg.rounds:
        summary.update(stopped_early=True, rounds_planned=cfg.rounds)
    return RunOutcome(summary, records, folder.path, clients, state.server, cfg)


def record_divergence(exp: Experiment, folder: RunFolder, state: RunProgress, round_: int,
                      exc: DivergenceError) -> dict[str, Any]:
    """``--on-divergence record``: round ``round_`` diverged, so the run ends with the model it has, the last
    global model (the one the round started from: a non-finite aggregate is never adopted). Its evaluation is
    the round's record, marked ``diverged``; the returned summary entry says when and why."""
    record, per_client = evaluate(exp, state.server.broadcast, round_)
    record = _rounded({"round": round_, **record, "diverged": 1})
    state.records.append(record)
    state.per_client, state.round = per_client, round_
    folder.append_jsonl("metrics.jsonl", record)
    return {"round": round_, "reason": str(exc)}


def write_client_table(exp: Experiment, folder: RunFolder, per_client: dict[int, dict[str, float]],
                       last_train: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """clients.csv (final metrics of every client); returns its rows as dicts of numbers."""
    task, rows = exp.runtime.task, []
    for cid in sorted(per_client):
        metrics = task.finalize(per_client[cid])
        rows.append([cid, int(exp.data.train_idx[cid].numel()), int(exp.data.test_idx[cid].numel()),
                     f"{metrics[task.primary_metric]:.6f}", f"{metrics.get('loss', float('nan')):.6f}",
                     f"{last_train.get(cid, {}).get('train_loss', float('nan')):.6f}"])
    header = ["client", "train_samples", "test_samples", task.primary_metric, "loss", "last_local_train_loss"]
    folder.write_csv("clients.csv", header, rows)
    return [{key: (int(v) if i < 3 else float(v)) for i, (key, v) in enumerate(zip(header, row))} for row in rows]


def run_experiment(cfg: RunConfig, progress: Optional[Callable[[int, dict], None]] = None,
                   resume: bool = False) -> RunOutcome:
    """Run one experiment end to end and return its summary. Bad input raises FedloomError before any
    run folder exists; a failure during training leaves a FAILED marker and no summary.json. ``resume``
    continues the existing run folder ``cfg.out`` from its checkpoint (or from round 0 if it has none).
    The folder is locked for the whole run (one writer), see docs/reliability.md."""
    exp = prepare_experiment(cfg, resume)
    try:
        return _run_in_folder(exp, progress, resume)
    finally:
        exp.engine.close()  # stops worker processes, if the engine has any


def prepare_experiment(cfg: RunConfig, resume: bool = False) -> Experiment:
    """Resolve and check ``cfg``, set this process's torch threads, load the data and build the experiment
    (nothing is written yet). The caller closes ``exp.engine``."""
    code_provenance()  # the commit of the code this process loaded, before a later commit can change HEAD
    cfg = resolve_config(cfg)
    check_run_paths(cfg, resume)
    torch.set_num_threads(cfg.threads)
    configure_heap(cfg.malloc)
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    return build_experiment(cfg, data, device)


def _run_in_folder(exp: Experiment, progress: Optional[Callable[[int, dict], None]], resume: bool) -> RunOutcome:
    trackers = TrackerGroup(make_trackers(exp.config.trackers))
    if resume:
        folder, start = open_for_resume(exp.config, exp.engine, exp.runtime.device)
        if start is not None:  # a bench rewrites config.toml from its plan (only the options given)
            write_resolved_config(exp, folder)
    else:
        folder, start = RunFolder.create(Path(exp.config.out), exp.config.overwrite), None
    try:
        trackers.start(folder.path, exp.config.to_dict())
        wrapped = trackers.wrap(progress)
        stopped = False
        if start is None:
            start = begin_run(exp, folder)
            # the initial model's evaluation (trackers plot it as step 0)
            stopped = wants_stop(wrapped, 0, start.records[0])
        outcome = run_rounds(exp, folder, wrapped, start, stopped)
        folder.finish(outcome.summary)
        remove_checkpoint(folder.path)
        if not exp.config.keep_client_states:
            exp.runtime.store.discard()
        trackers.finish(outcome.summary)
        return outcome
    except BaseException as exc:
        if folder.previous is not None:  # failed before it started: the replaced run comes back untouched
            folder.abort_start()
        else:
            folder.mark_failed(exc)
        trackers.finish(None, quiet=True)
        raise
    finally:
        folder.release()


def write_resolved_config(exp: Experiment, folder: RunFolder) -> None:
    """The run's resolved config (the built models' whole option tables included) as its config.toml."""
    folder.write_text("config.toml", to_toml(exp.config))


def begin_run(exp: Experiment, folder: RunFolder) -> RunProgress:
    """A fresh start in ``folder``: the resolved config, the partition report, an empty client-state store
    (nothing of an earlier run in the same place survives), the round-0 evaluation. Only then is a run that
    ``--overwrite`` replaced deleted."""
    write_resolved_config(exp, folder)
    write_partition_report(exp.data, folder.path, cache_dir=exp.config.cache_dir)
    exp.runtime.store.clear()
    start = start_progress(exp, folder)
    folder.commit_start()
    return start


def check_run_paths(cfg: RunConfig, resume: bool) -> None:
    """Paths that cannot work are refused before any data are loaded (one line naming the path)."""
    out = Path(cfg.out or ".")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.exists() and not checkpoint.is_file():
        raise ConfigError(f"{checkpoint} is not a checkpoint file (it is a folder); move it away")
    if cfg.store_dir:
        check_store_dir(Path(cfg.store_dir))


# ------------------------------------------------------------------------------------------------ fedloom.run(...)
class _CallableModule(types.ModuleType):
    """``import fedloom.run`` binds this module to the package attribute ``fedloom.run``, which is also the
    documented Python entry point ``fedloom.run(...)``: calling the module calls :func:`fedloom.api.run`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from fedloom.api import run

        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
