"""The run configuration: one dataclass that is the schema of CLI flags, config files and the run folder.

Top-level fields are common to every run. Hyperparameters of the chosen algorithm, dataset and model live in
``options[<component name>]`` and come from ``--<name>.<field>`` flags or a ``[<name>]`` TOML table; their
schema is the component's own frozen dataclass.
"""

from __future__ import annotations

import dataclasses
import math
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
    drop_last: bool = _f(False, "leave out each epoch's last batch when smaller than --batch-size (PyTorch's "
                                "DataLoader drop_last, as PFLlib trains); a client smaller than one batch then "
                                "makes no local step")
    lr: float = _f(0.005, "local SGD learning rate")
    lr_decay: float = _f(1.0, "per-round decay of the local SGD learning rate: round r (1, 2, ... as in "
                              "metrics.jsonl) trains with lr * lr_decay**r (the Snowball repo: 0.99)")
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
    malloc: str = _f("tuned", "C heap of training processes: tuned (freed memory stays for the next step: fewer "
                              "page faults, faster small-batch steps, up to ~256 MiB more resident per process) "
                              "| system (glibc's defaults); never changes results")
    data_dir: Optional[str] = _f(None, "folder with dataset files (searched first)")
    cache_dir: Optional[str] = _f(None, "partition cache folder; default $FEDLOOM_CACHE or ~/.cache/fedloom")
    out: Optional[str] = _f(None, "run folder; default runs/<algorithm>-<dataset>-<time>")
    overwrite: bool = _f(False, "replace an existing run folder")
    quiet: bool = _f(False, "no progress bar, only the final line (for logs)")
    on_divergence: str = _f("fail", "a run whose training diverges (a non-finite loss or model): fail (an error and "
                                    "a FAILED folder) | record (the run ends there and records it as its outcome: "
                                    "the model it ended with is evaluated; for attack studies, where divergence is "
                                    "what the attack achieved)")
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
    pattern: str = _f("star", "round pattern: star (a server) | cyclic (clients one after another, a server step "
                              "after each) | gossip (no server: nodes average with their "
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


SEED_MAX = 2**32 - 1  # seeding.derive_seed keeps 32 bits of the root seed: larger ones would alias smaller ones


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
