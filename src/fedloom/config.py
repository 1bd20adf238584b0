"""The run configuration: one dataclass that is the schema of CLI flags, config files and the run folder.

Top-level fields are common to every run. Hyperparameters of the chosen algorithm, dataset and model live in
``options[<component name>]`` and come from ``--<name>.<field>`` flags or a ``[<name>]`` TOML table; their
schema is the component's own frozen dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from fedloom.errors import ConfigError
from fedloom.registry import Registry, canonical

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    algorithm: str = _f("fedavg", "algorithm name (fedloom list)")
    dataset: str = _f("digits", "dataset name")
    partition: Optional[str] = _f(None, "partitioner; default: the dataset's (natural for synthetic, else dirichlet)")
    alpha: float = _f(0.1, "Dirichlet concentration (smaller = more label skew)")
    classes_per_client: int = _f(2, "classes per client for the pathological partition")
    balanced: bool = _f(False, "pathological: equal shares of each class among its clients (PFLlib balance)")
    min_samples: Optional[int] = _f(None, "minimum samples per client; default PFLlib's "
                                          "min(batch/(1-train_ratio), N/clients/2)")
    clients: int = _f(20, "number of clients")
    rounds: int = _f(50, "communication rounds")
    join_ratio: float = _f(1.0, "fraction of clients sampled each round")
    local_epochs: int = _f(1, "local epochs per round")
    batch_size: int = _f(10, "local minibatch size")
    lr: float = _f(0.005, "local SGD learning rate")
    momentum: float = _f(0.0, "local SGD momentum (PFLlib: 0)")
    weight_decay: float = _f(0.0, "local SGD weight decay")
    model: Optional[str] = _f(None, "model; default cnn for >=28x28 images, mlp for small images, logreg else")
    model_family: Optional[str] = _f(None, "a named family of architectures (HtFLlib: HtFE-img-8, HCNNs8 ...): client i "
                                           "gets member i mod len; see docs/heterogeneous.md")
    engine: str = _f("serial", "execution engine")
    device: str = _f("auto", "cpu | cuda | auto (cuda when available)")
    precision: str = _f("float32", "forward-pass precision: float32 | bfloat16 (autocast; faster convolutions "
                                   "on GPUs and AVX512-BF16 CPUs, results differ from float32 by rounding)")
    compile: bool = _f(False, "compile plain local SGD steps with torch.compile (inductor): faster small-model steps "
                              "after a one-time compile; equal to the eager run to float rounding")
    eval_batch_size: int = _f(0, "samples per evaluation forward pass; 0: 256 on CPU (cache-sized), 4096 on GPU")
    # the engines' options (--vectorized.pack-size, --processes.workers...) are stored in these four fields, whose
    # flags stay as aliases (fedloom.engines.options): run folders and identity hashes predate the namespaces
    pack_size: int = _f(32, "alias of --vectorized.pack-size: clients trained in lockstep (slots)")
    workers: Optional[int] = _f(None, "alias of --processes.workers: worker processes (default: number of cores)")
    worker_engine: str = _f("serial", "alias of --processes.worker-engine: engine inside each worker "
                                      "(serial | vectorized)")
    worker_timeout: float = _f(30.0, "alias of --processes.timeout: seconds without a worker heartbeat before the "
                                     "run ends (a frozen or stopped worker)")
    worker_start: str = _f("auto", "alias of --processes.start: how worker processes start: fork (a copy of the "
                                   "main process, imports and data already loaded), spawn (fresh interpreters, as "
                                   "on another machine) | auto (fork on Linux with a CPU device, else spawn)")
    # the Ray engine's own options (--ray.address, --ray.gpus-per-worker); they say where a run executes, not
    # what it computes (checkpoint.NON_IDENTITY_FIELDS)
    ray_address: Optional[str] = _f(None, "alias of --ray.address: an existing Ray cluster (auto, host:port or "
                                          "ray://host:port); default: a local cluster started for the run")
    ray_gpus_per_worker: float = _f(0.0, "alias of --ray.gpus-per-worker: GPUs (or a fraction) per Ray worker")
    ray_reduce: str = _f("ordered", "alias of --ray.reduce: ordered (the serial engine's additions, bit for bit) | "
                                    "tree (Parrot's worker -> node -> driver partial sums)")
    store: str = _f("auto", "client-state store: memory | disk | auto (disk when states would not fit in RAM)")
    store_dtype: str = _f("float32", "storage dtype of floating client states: float32 | bfloat16 | float16")
    store_dir: Optional[str] = _f(None, "disk store folder; default RUN_DIR/client_states (a run uses its own "
                                        "subfolder of it, keyed by the run folder)")
    keep_client_states: bool = _f(False, "keep the client states (disk store) after the run completes")
    seed: int = _f(1, "root seed for model init, sampling and batches")
    data_seed: int = _f(0, "seed of the partition and of generated data (kept fixed across training seeds)")
    train_ratio: float = _f(0.75, "per-client train fraction; the rest is the client's test split")
    eval_every: int = _f(1, "evaluate every k rounds (the last round always)")
    eval_train: bool = _f(False, "also evaluate on every client's training split")
    threads: int = _f(1, "torch threads in this process (1 is robust on shared machines)")
    data_dir: Optional[str] = _f(None, "folder with dataset files (searched first)")
    cache_dir: Optional[str] = _f(None, "partition cache folder; default $FEDLOOM_CACHE or ~/.cache/fedloom")
    out: Optional[str] = _f(None, "run folder; default runs/<algorithm>-<dataset>-<time>")
    overwrite: bool = _f(False, "replace an existing run folder")
    quiet: bool = _f(False, "no progress bar, only the final line (for logs)")
    checkpoint_every: int = _f(0, "write RUN_DIR/checkpoint.pt every N rounds for --resume (0: never)")
    trackers: Optional[str] = _f(None, "comma-separated mirrors of the metrics: tensorboard, mlflow, wandb (optional "
                                       "extras), csv (RUN_DIR/metrics.csv)")
    transform: Optional[str] = _f(None, "upload transforms applied in order on every client, comma-separated: "
                                        "clip, gaussian, topk, quantize (options --clip.norm, --topk.ratio ...)")
    aggregator: str = _f("mean", "how an averaging server combines uploads: mean | median | trimmed-mean | krum "
                                 "(options --trimmed-mean.beta, --krum.f)")
    attack: Optional[str] = _f(None, "attack run by a malicious subset of clients fixed by the seed "
                                     "(--attack.fraction, --attack.sampling plain|exact): labelflip | badnets | dba "
                                     "(data) | scaling | signflip | gaussian-attack (update) | alie | ipm | minmax "
                                     "| minsum (omniscient); see docs/trust-attacks.md")
    pattern: str = _f("star", "round pattern: star (a server) | gossip (no server: nodes average with their "
                              "--topology neighbours)")
    topology: str = _f("ring", "gossip topology: ring | torus | complete (Metropolis-Hastings weights)")
    test_split: str = _f("per-client", "per-client: split each client's samples by --train-ratio (PFLlib); global: "
                                       "hold out a stratified (1-train_ratio) of all samples as one test set "
                                       "shared by every client, and partition the rest")
    shards_per_client: int = _f(2, "shard partition: label-sorted shards per client (McMahan et al. 2017)")
    quantity_dist: Optional[str] = _f(None, "client sizes of quantity/inner-dirichlet: equal | power-law | lognormal "
                                            "| dirichlet (default: power-law for quantity, equal for inner-dirichlet)")
    size_alpha: float = _f(1.0, "quantity skew: Pareto tail index (power-law) or Dirichlet concentration over "
                                "client sizes (dirichlet); smaller = more size skew")
    sigma: float = _f(1.0, "quantity skew: log-normal sigma of client sizes (lognormal); larger = more size skew")
    base_partition: str = _f("iid", "feature-shift: the partitioner that assigns samples (e.g. dirichlet for "
                                    "label skew + feature shift)")
    feature_shift: str = _f("rotate", "feature-shift: comma-separated transforms: rotate, contrast, color, noise")
    domains: int = _f(4, "feature-shift: number of domains; client k is in domain k mod domains (0 = unchanged)")
    shift_strength: float = _f(1.0, "feature-shift: transform strength (0 = none; 1: rotations 360*d/domains "
                                    "degrees, contrast down to 1/4, noise up to the data's std)")
    partition_file: Optional[str] = _f(None, "clients read from a file instead of a partitioner: fedloom's "
                                             "clients.npz/.json (fedloom partition --out) or a PFLlib folder "
                                             "(config.json, train/, test/); see docs/data.md")
    options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "namespaced options"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig) if f.name != "options"}


# ----------------------------------------------------------------------------------------------- typing
def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return hint, False


FLOAT32_MAX = 3.4028234663852886e38  # every float option ends up in float32 tensor arithmetic
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive float32: below it a value becomes 0
INT64_MAX = 2**63 - 1  # every int option ends up in an int64 tensor, a numpy seed or a count


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a CLI string or TOML value to ``hint`` (int, float, bool, str, Optional[...]).

    Numbers must be numbers: a boolean (TOML ``true``) is not taken as 1, floats must be finite and fit in a
    float32 (torch would otherwise fail mid-run, or train on inf/nan), ints must fit in an int64."""
    base, optional = _unwrap_optional(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if base in (int, float) and isinstance(value, bool):
        raise ConfigError(f"invalid value {value!r} for {name}: expected {base.__name__}, got a boolean")
    try:
        if base is bool:
            return _to_bool(value)
        if base is int:
            return _check_int(_to_int(value), value, name)
        if base is float:
            return _check_float(float(value), value, name)
        if base is str:
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"invalid value {value!r} for {name}: expected {base.__name__}") from None
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError
    return int(value) if not isinstance(value, str) else int(value, 0)


def _check_int(number: int, value: Any, name: str) -> int:
    if not -INT64_MAX - 1 <= number <= INT64_MAX:
        raise ConfigError(f"invalid value {value!r} for {name}: integers must fit in 64 bits (|value| < 2**63)")
    return number


def _check_float(number: float, value: Any, name: str) -> float:
    if not math.isfinite(number):
        raise ConfigError(f"invalid value {value!r} for {name}: expected a finite number")
    if 0 < abs(number) < FLOAT32_TINY:
        raise ConfigError(f"invalid value {value!r} for {name}: too small for float32 (it would be 0)")
    if abs(number) > FLOAT32_MAX:
        raise ConfigError(f"invalid value {value!r} for {name}: out of float32 range "
                          f"(|value| <= {FLOAT32_MAX:.4g})")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def component_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


# ----------------------------------------------------------------------------------------------- building
#: The key that carries a run field's value inside the options table of the same name. TOML cannot hold both
#: ``attack = "badnets"`` and an ``[attack]`` table (the threat model's options), so a table named after a run
#: field holds the field as ``name``: ``[attack]`` / ``name = "badnets"`` / ``fraction = 0.2``. Components whose
#: option table is named after a run field may therefore not declare an option called ``name`` (tested).
FIELD_KEY = "name"


def set_value(raw: dict[str, Any], key: str, value: Any) -> None:
    """Apply ``key=value`` to a raw config dict; ``ns.field`` keys go to options[ns][field], except
    ``<run field>.name``, which is the run field itself (FIELD_KEY)."""
    if "." in key:
        namespace, name = key.split(".", 1)
        if namespace.replace("-", "_") in RUN_FIELDS and name == FIELD_KEY:
            raw[namespace.replace("-", "_")] = value
            return
        raw.setdefault("options", {}).setdefault(canonical(namespace), {})[name.replace("-", "_")] = value
    else:
        raw[key.replace("-", "_")] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` with value parsed as a TOML value when possible (numbers, booleans), else a string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file: top-level run fields plus one table per component name."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    return raw_from_table(data)


def raw_from_table(data: dict[str, Any]) -> dict[str, Any]:
    """A parsed TOML table (top-level run keys, one sub-table per component) as a raw config dict."""
    raw: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for name, inner in value.items():
                set_value(raw, f"{key}.{name}", inner)
        else:
            set_value(raw, key, value)
    return raw


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Typed RunConfig from a raw dict, with every value coerced and unknown keys rejected."""
    hints = field_hints(RunConfig)
    unknown = sorted(set(raw) - set(RUN_FIELDS) - {"options"})
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(RUN_FIELDS))}")
    values = {name: coerce(value, hints[name], name) for name, value in raw.items() if name != "options"}
    given = raw.get("options", {})
    if not isinstance(given, dict) or not all(isinstance(opts, dict) for opts in given.values()):
        raise ConfigError(f"'options' is not a config key (got options = {given!r}); give component options as "
                          "[<name>] tables or --set <name>.<option>=VALUE")
    options = {canonical(ns): dict(opts) for ns, opts in given.items()}
    return RunConfig(**values, options=options)


# ----------------------------------------------------------------------------------------------- validation
def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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


SEED_MAX = 2**32 - 1  # seeding.derive_seed keeps 32 bits of the root seed: larger ones would alias smaller ones


def validate_seeds(cfg: RunConfig) -> None:
    """Seeds are 32-bit: -1 or 2**32 + 1 would silently run seed 2**32 - 1 or 1 under another name."""
    for flag, value in (("--seed", cfg.seed), ("--data-seed", cfg.data_seed)):
        _check(0 <= value <= SEED_MAX, f"{flag} must be in [0, {SEED_MAX}] (32-bit seeds), got {value}")


def validate_names(cfg: RunConfig) -> None:
    """Choices that are not registry entries (those are looked up, with suggestions, in run.resolve_config)."""
    from fedloom.data.splits import check_test_split

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
    from fedloom.data.base import PARTITIONERS, PartitionSpec
    from fedloom.data.partitioners.domain_transforms import parse_kinds
    from fedloom.data.partitioners.sizes import size_dist

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


# ----------------------------------------------------------------------------------------------- option ranges
#: The field-metadata keys ``hp`` writes and ``check_fields`` reads.
BOUND_KEYS = ("ge", "gt", "le", "lt")


def hp(default: Any, *, ge: Any = None, gt: Any = None, le: Any = None, lt: Any = None,
       choices: Optional[tuple[Any, ...]] = None, help: str = "") -> Any:
    """A component option (an algorithm's, dataset's, model's, transform's... dataclass field) declared once with
    its range: ``ge``/``gt``/``le``/``lt`` bound a number, ``choices`` lists the allowed values. ``check_fields``
    enforces them (make_component calls it for every component it builds), so an options class writes no
    ``raise ConfigError`` for a plain range; checks that involve several fields or the model stay as code."""
    bounds = {key: bound for key, bound in zip(BOUND_KEYS, (ge, gt, le, lt)) if bound is not None}
    metadata: dict[str, Any] = {"help": help, "bounds": bounds}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


def check_fields(owner: Any, prefix: Optional[str] = None) -> None:
    """ConfigError for the first field of the options dataclass ``owner`` outside the range its ``hp`` metadata
    declares, in one line naming the option, the bound and the value (``ditto.personal_epochs must be >= 1, got
    0``). ``prefix`` defaults to the class's registry name. None means unset and is allowed; a boolean never
    passes a numeric bound (True is not 1); NaN fails every bound."""
    prefix = prefix if prefix is not None else getattr(type(owner), "registry_name", type(owner).__name__.lower())
    for fld in dataclasses.fields(owner):
        value = getattr(owner, fld.name)
        if value is None:
            continue
        choices = fld.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{prefix}.{fld.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        bounds = fld.metadata.get("bounds")
        if bounds and not _within(value, bounds):
            raise ConfigError(f"{prefix}.{fld.name} must be {_range_text(bounds)}, got {value}")


_COMPARE = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
            "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _within(value: Any, bounds: dict[str, Any]) -> bool:
    """A real number (not a bool, not inf or NaN) satisfying every bound."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return all(_COMPARE[key][1](value, bound) for key, bound in bounds.items())


def _range_text(bounds: dict[str, Any]) -> str:
    """">= 1", "> 0", "in (0, 1]"... worded as the hand-written checks were."""
    lower = next(((k, b) for k, b in bounds.items() if k in ("ge", "gt")), None)
    upper = next(((k, b) for k, b in bounds.items() if k in ("le", "lt")), None)
    if lower and upper:
        return f"in {'[' if lower[0] == 'ge' else '('}{lower[1]}, {upper[1]}{']' if upper[0] == 'le' else ')'}"
    key, bound = lower or upper
    return f"{_COMPARE[key][0]} {bound}"


def make_component(registry: Registry, name: str, given: dict[str, Any]) -> Any:
    """Instantiate the registered options dataclass ``name`` from ``given``, coercing each value to its field
    type; unknown keys, bad values and failed ``validate()`` checks become one ConfigError."""
    cls = registry.get(name)
    key = getattr(cls, "registry_name", canonical(name))
    fields = component_fields(cls)
    given = {k.replace("-", "_"): v for k, v in given.items()}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        valid = ", ".join(f"{key}.{f}" for f in fields) or f"none ({registry.kind} '{key}' takes no options)"
        raise ConfigError(f"unknown option(s) {[f'{key}.{u}' for u in unknown]} for {registry.kind} '{key}'; "
                          f"valid options: {valid}")
    hints = field_hints(cls) if fields else {}
    values = {k: coerce(v, hints[k], f"{key}.{k}") for k, v in given.items()}
    try:
        instance = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid options for {registry.kind} '{key}': {exc}") from None
    validate = getattr(instance, "validate", None)
    if validate is not None:
        validate()  # the base classes' validate() runs check_fields, then a subclass's cross-field checks
    else:
        check_fields(instance, key)
    return instance


def component_options(registry: Registry, name: str, cfg: RunConfig) -> Any:
    """The options dataclass of component ``name`` built from ``cfg.options[name]``."""
    return make_component(registry, name, dict(cfg.options.get(canonical(name), {})))


def check_option_namespaces(cfg: RunConfig, selected: list[str], known: set[str]) -> None:
    """Options for components that are not selected are almost always a forgotten ``--algorithm NAME`` (or
    dataset, model, seam) or a typo: refuse them, naming the flag that selects their component."""
    for namespace in cfg.options:
        if namespace not in selected:
            raise ConfigError(unselected_options_message(cfg, namespace, known))


def unselected_options_message(cfg: RunConfig, namespace: str, known: set[str]) -> str:
    """``--fedprox.mu is an option of algorithm 'fedprox', but the run uses algorithm 'fedavg'; add
    --algorithm fedprox, or remove it``; for an unknown name, the closest known one."""
    import difflib

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
    from fedloom.algorithms import ALGORITHMS
    from fedloom.data.base import DATASETS
    from fedloom.models import MODELS
    from fedloom.seams import SEAM_REGISTRIES
    import fedloom.data.datasets  # noqa: F401  (registration)

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
    from fedloom.data.base import PARTITIONERS
    from fedloom.engines import ENGINE_OPTIONS
    from fedloom.engines.options import engines_in_use, stored_fields
    from fedloom.errors import FedloomError
    import fedloom.data.partitioners  # noqa: F401  (registration)

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
