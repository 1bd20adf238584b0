"""The run configuration's checks and writing that need the component registries: value checks of a whole
run config (``validate_numbers``), options given for components a run does not select, the fields a run does not
use, and the config as TOML.

They live above ``config`` (which every component imports for ``hp`` and the options dataclasses) so that
``config`` imports no registry: the import arrows run one way, components -> config, and these checks -> both.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import fedloom.data.datasets  # noqa: F401  (registration)
import fedloom.data.partitioners  # noqa: F401  (registration)
from fedloom.algorithms import ALGORITHMS
from fedloom.config import FIELD_KEY, RUN_FIELDS, SEED_MAX, RunConfig, _check
from fedloom.data.base import DATASETS, PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.domain_transforms import parse_kinds
from fedloom.data.partitioners.sizes import size_dist
from fedloom.data.splits import check_test_split
from fedloom.engines import ENGINE_OPTIONS
from fedloom.engines.options import engines_in_use, stored_fields
from fedloom.errors import ConfigError, FedloomError
from fedloom.models import MODELS
from fedloom.registry import Registry, canonical
from fedloom.seams import SEAM_REGISTRIES


def validate_numbers(cfg: RunConfig) -> None:
    """Every check of a RunConfig that needs no data: ranges, names and the data folder. Run before anything
    is loaded or written, so that bad input costs one line and no run folder (partitioner-specific values are
    checked whatever the partition: an invalid value is a mistake even where it would be ignored)."""
    _check(cfg.clients >= 1, f"--clients must be >= 1, got {cfg.clients}")
    _check(cfg.rounds >= 1, f"--rounds must be >= 1, got {cfg.rounds}")
    _check(0 < cfg.join_ratio <= 1, f"--join-ratio must be in (0, 1], got {cfg.join_ratio}")
    _check(cfg.local_epochs >= 1, f"--local-epochs must be >= 1, got {cfg.local_epochs}")
    _check(cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}")
    _check(math.isfinite(cfg.lr) and cfg.lr > 0, f"--lr must be a positive number, got {cfg.lr}")
    _check(0 < cfg.lr_decay <= 1, f"--lr-decay must be in (0, 1], got {cfg.lr_decay}")
    _check(0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}")
    _check(cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    _check(math.isfinite(cfg.alpha) and cfg.alpha > 0, f"--alpha must be > 0 (Dirichlet concentration), "
                                                        f"got {cfg.alpha}")
    _check(cfg.classes_per_client >= 1, f"--classes-per-client must be >= 1, got {cfg.classes_per_client}")
    _check(cfg.min_samples is None or cfg.min_samples >= 0, f"--min-samples must be >= 0, got {cfg.min_samples}")
    _check(0 < cfg.train_ratio < 1, f"--train-ratio must be in (0, 1), got {cfg.train_ratio}")
    _check(cfg.eval_every >= 1, f"--eval-every must be >= 1, got {cfg.eval_every}")
    _check(cfg.threads >= 1, f"--threads must be >= 1, got {cfg.threads}")
    cores = os.cpu_count() or 1  # torch would try to start them all (10**6 threads: killed for memory)
    _check(cfg.threads <= cores, f"--threads must be at most {cores} (this machine's CPUs), got {cfg.threads}")
    _check(cfg.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    _check(cfg.pack_size >= 1, f"--pack-size must be >= 1, got {cfg.pack_size}")
    _check(cfg.workers is None or cfg.workers >= 1, f"--workers must be >= 1, got {cfg.workers}")
    _check(math.isfinite(cfg.worker_timeout) and cfg.worker_timeout > 0,
           f"--worker-timeout must be a positive number of seconds, got {cfg.worker_timeout}")
    _check(cfg.on_divergence in ("fail", "record"),
           f"--on-divergence must be fail or record, got {cfg.on_divergence!r}")
    _check(cfg.malloc in ("tuned", "system"), f"--malloc must be tuned or system, got {cfg.malloc!r}")
    _check(cfg.store in ("memory", "disk", "auto"), f"--store must be memory, disk or auto, got {cfg.store!r}")
    _check(cfg.precision in ("float32", "bfloat16"),
           f"--precision must be float32 or bfloat16, got {cfg.precision!r}")
    _check(cfg.eval_batch_size >= 0, f"--eval-batch-size must be >= 0 (0: automatic), got {cfg.eval_batch_size}")
    _check(cfg.store_dtype in ("float32", "bfloat16", "float16"),
           f"--store-dtype must be float32, bfloat16 or float16, got {cfg.store_dtype!r}")
    _check(cfg.device in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", cfg.device) is not None,
           f"--device must be cpu, cuda or auto (or cuda:N), got {cfg.device!r}")
    validate_seeds(cfg)
    validate_names(cfg)
    validate_partition_values(cfg)
    validate_data_dir(cfg)


def validate_seeds(cfg: RunConfig) -> None:
    """Seeds are 32-bit: -1 or 2**32 + 1 would silently run seed 2**32 - 1 or 1 under another name."""
    for flag, value in (("--seed", cfg.seed), ("--data-seed", cfg.data_seed)):
        _check(0 <= value <= SEED_MAX, f"{flag} must be in [0, {SEED_MAX}] (32-bit seeds), got {value}")


def validate_names(cfg: RunConfig) -> None:
    """Choices that are not registry entries (those are looked up, with suggestions, in run.resolve_config)."""
    check_test_split(cfg.test_split)
    index = re.fullmatch(r"cuda:(\d+)", cfg.device)
    if index is not None:
        _check_cuda_index(int(index.group(1)))
    _check(cfg.worker_engine in ("serial", "vectorized"),
           f"--worker-engine must be serial or vectorized, got {cfg.worker_engine!r}")


def _check_cuda_index(index: int) -> None:
    """``cuda:N`` past the last GPU would fail at the first tensor moved, mid-start (no CUDA at all is
    reported by run.resolve_device)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _check(count == 0 or index < count, f"--device cuda:{index}: this machine has {count} CUDA device(s) "
                                        f"(cuda:0 to cuda:{count - 1})")


def validate_partition_values(cfg: RunConfig) -> None:
    """The skew options of the shard, quantity and feature-shift partitioners."""
    _check(cfg.shards_per_client >= 1, f"--shards-per-client must be >= 1, got {cfg.shards_per_client}")
    _check(cfg.size_alpha > 0, f"--size-alpha must be > 0, got {cfg.size_alpha}")
    _check(cfg.sigma >= 0, f"--sigma must be >= 0, got {cfg.sigma}")
    _check(cfg.domains >= 1, f"--domains must be >= 1, got {cfg.domains}")
    _check(cfg.shift_strength >= 0, f"--shift-strength must be >= 0, got {cfg.shift_strength}")
    if cfg.quantity_dist is not None:
        size_dist(PartitionSpec(name="quantity", num_clients=cfg.clients, quantity_dist=cfg.quantity_dist), "equal")
    parse_kinds(cfg.feature_shift)
    if cfg.base_partition not in PARTITIONERS:
        raise ConfigError(f"--base-partition: {PARTITIONERS.unknown_message(cfg.base_partition)}")
    _check(canonical(cfg.base_partition) != "feature-shift",
           "--base-partition cannot be feature-shift itself (e.g. iid or dirichlet)")


def validate_data_dir(cfg: RunConfig) -> None:
    """A --data-dir that is given must be a folder: it is the only place the loaders then look (no fallback)."""
    if cfg.data_dir is None:
        return
    path = Path(cfg.data_dir).expanduser()
    _check(path.exists(), f"--data-dir {cfg.data_dir}: no such folder")
    _check(path.is_dir(), f"--data-dir {cfg.data_dir} is not a folder")


def check_option_namespaces(cfg: RunConfig, selected: list[str], known: set[str]) -> None:
    """Options for components that are not selected are almost always a forgotten ``--algorithm NAME`` (or
    dataset, model, seam) or a typo: refuse them, naming the flag that selects their component."""
    for namespace in cfg.options:
        if namespace not in selected:
            raise ConfigError(unselected_options_message(cfg, namespace, known))


def unselected_options_message(cfg: RunConfig, namespace: str, known: set[str]) -> str:
    """``--fedprox.mu is an option of algorithm 'fedprox', but the run uses algorithm 'fedavg'; add
    --algorithm fedprox, or remove it``; for an unknown name, the closest known one."""
    keys = list(cfg.options.get(namespace, {})) or [""]
    given = ", ".join(f"--{namespace}.{k.replace('_', '-')}" for k in keys).rstrip(".")
    verb, pronoun = ("is an option", "it") if len(keys) == 1 else ("are options", "them")
    owner = _owner_kind(namespace)
    if owner is None:
        close = difflib.get_close_matches(namespace, sorted(known), n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{given}: no algorithm, dataset, model or seam is called '{namespace}'{guess}; remove {pronoun}"
    kind, field_name = owner
    chosen = getattr(cfg, field_name, None) if field_name else None
    uses = f"the run uses {kind} '{chosen}'" if chosen else f"the run uses no {kind}"
    choose = f"add --{field_name.replace('_', '-')} {namespace}, or" if field_name else "select it, or"
    return f"{given} {verb} of {kind} '{namespace}', but {uses}; {choose} remove {pronoun}"


def _owner_kind(namespace: str) -> Optional[tuple[str, Optional[str]]]:
    """(kind, RunConfig field that selects it) of the component called ``namespace``, or None."""
    fields = {"round pattern": "pattern"}
    for registry in (ALGORITHMS, DATASETS, MODELS, *SEAM_REGISTRIES):
        if namespace in registry:
            name = fields.get(registry.kind, registry.kind)
            return registry.kind, name if name in RUN_FIELDS else None
    return None


# ----------------------------------------------------------------------------------------------- writing
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML (None values omitted), readable back by load_toml. Fields that the chosen
    partitioner, engine or round pattern does not read are left out while they hold their default (reading the
    file back restores the same value, so the run's identity hash is unchanged); one that was set to another
    value stays, marked with a comment, because the identity of the run includes it."""
    unused = inapplicable_fields(cfg)
    in_tables = {ns for ns in cfg.options if ns in RUN_FIELDS and getattr(cfg, ns) is not None}
    lines = []
    for name in RUN_FIELDS:
        value = getattr(cfg, name)
        if value is None or name in in_tables or (name in unused and value == RUN_FIELDS[name].default):
            continue
        note = f"  # not used: {unused[name]}" if name in unused else ""
        lines.append(f"{name} = {_toml_value(value)}{note}")
    for namespace, opts in sorted(cfg.options.items()):
        lines.append(f"\n[{namespace}]")
        if namespace in in_tables:  # the field of the same name, which TOML cannot also hold at the top level
            lines.append(f"{FIELD_KEY} = {_toml_value(getattr(cfg, namespace))}")
        lines += [f"{key} = {_toml_value(val)}" for key, val in sorted(opts.items()) if val is not None]
    return "\n".join(lines) + "\n"


# fields read only by some partitioners (a partitioner's ``params``), engines (their options' ``stored_as``) or
# round patterns; the others apply to every run
_GOSSIP_FIELDS = {"topology": "gossip"}


def inapplicable_fields(cfg: RunConfig) -> dict[str, str]:
    """RunConfig fields that the resolved ``cfg`` does not use, each with the reason (``partition
    'dirichlet'``). Empty when a name does not resolve (an unresolved config keeps every field)."""
    try:
        unused = _unused_partition_fields(cfg, PARTITIONERS)
        stored = {name: set(stored_fields(cls).values()) for name, cls in ENGINE_OPTIONS.items()}
        used = set().union(*(stored.get(e, set()) for e in engines_in_use(cfg)))
        unused.update({f: f"engine '{cfg.engine}'" for f in sorted(set().union(*stored.values()) - used)})
    except FedloomError:
        return {}
    for name, pattern in _GOSSIP_FIELDS.items():
        if canonical(cfg.pattern) != pattern:
            unused[name] = f"pattern '{cfg.pattern}'"
    return unused


def _unused_partition_fields(cfg: RunConfig, partitioners: Registry) -> dict[str, str]:
    """Partition fields read by some partitioner but not by the chosen one (nor, for feature-shift, by its base
    partitioner)."""
    if not cfg.partition:
        return {}
    every = {p for _, fn in partitioners.items() for p in getattr(fn, "params", ())}
    chosen = partitioners.get(cfg.partition)
    used = set(getattr(chosen, "params", ()))
    if "base_partition" in used and cfg.base_partition in partitioners:
        used |= set(getattr(partitioners.get(cfg.base_partition), "params", ()))
    return {name: f"partition '{cfg.partition}'" for name in sorted(every - used) if name in RUN_FIELDS}
