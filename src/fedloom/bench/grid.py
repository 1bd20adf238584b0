"""Grid files: a base config, axes to sweep and seeds, expanded into validated, hash-named runs.

```toml
[grid]                       # all optional
name = "fmnist-pfl"          # default: the file name without .toml
out = "runs/bench/fmnist-pfl"  # root of the run folders; default runs/bench/<name>
seeds = [1, 2, 3]            # default [1]
workers = 4                  # parallel runs (an integer >= 1); default: the number of CPU cores
threads = 1                  # torch threads per run

[base]                       # a config file: run keys plus [base.<component>] option tables
dataset = "fashion-mnist"
[base.fedprox]
mu = 0.01

[axes]                       # the cartesian product of every axis
algorithm = ["fedavg", "fedprox"]
"fedprox.mu" = [0.01, 0.1]   # option axes only multiply the runs that use that component
setting = [{partition = "dirichlet", alpha = 0.1}, {partition = "pathological", classes_per_client = 2}]
```
An axis whose values are tables sets several keys at once (the axis name is only a label). Option tables of
components a run does not use are dropped for that run, and runs whose resolved configs coincide are kept
once. Everything is validated — unknown algorithms first, all of them named in one message — before anything
runs.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from fedloom.checkpoint import config_hash
from fedloom.config import RunConfig, build_config, parse_set, raw_from_table, set_value
from fedloom.config_checks import to_toml
from fedloom.errors import ConfigError
from fedloom.registry import canonical
from fedloom.resources import packaged

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID_KEYS = {"name", "out", "seeds", "workers", "threads"}


@dataclass
class GridSpec:
    """A parsed grid file (not yet expanded)."""

    path: Path
    name: str
    out: Path
    seeds: list[int]
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    workers: int
    threads: int


@dataclass
class PlannedRun:
    """One run of the grid: its resolved config, identity hash and run folder."""

    label: str
    config: RunConfig
    hash: str
    folder: Path

    def config_toml(self) -> str:
        return to_toml(self.config)


# ------------------------------------------------------------------------------------------------ parsing
def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"grid file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse grid file {path}: {exc}") from None


def _base_raw(table: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``[base]`` as a raw config dict (same shape as config.load_toml), then ``--set`` overrides."""
    raw = raw_from_table(table)
    for item in overrides:
        set_value(raw, *parse_set(item))
    return raw


def _int_list(value: Any, what: str, path: Path) -> list[int]:
    if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
        raise ConfigError(f"grid {path}: {what} must be a non-empty list of integers, got {value!r}")
    return list(dict.fromkeys(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not the number 1


def _count(value: Any, what: str, path: Path, most: Optional[int] = None) -> int:
    """A worker or thread count: an integer >= 1 (not 1.5, not "two", not true, not 0 meaning "all cores")."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"grid {path}: {what} must be an integer >= 1, got {value!r}")
    if most is not None and value > most:
        raise ConfigError(f"grid {path}: {what} must be at most {most} (this machine's CPUs), got {value}")
    return value


def _text(value: Any, what: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"grid {path}: {what} must be a non-empty string, got {value!r}")
    return value


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"grid {path}: [{key}] must be a table, got {key} = {value!r}")
    return value


def _axes(table: Any, path: Path) -> dict[str, list[Any]]:
    if not isinstance(table, dict):
        raise ConfigError(f"grid {path}: [axes] must be a table of lists")
    for name, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {path}: axis '{name}' must be a non-empty list, got {values!r}")
        if canonical(name) == "seed":
            raise ConfigError(f"grid {path}: sweep seeds with [grid] seeds = [...], not an axis")
    return table


def load_grid(path: Path, overrides: Sequence[str] = (), out: Optional[str] = None,
              workers: Optional[int] = None) -> GridSpec:
    """Parse a grid file; ``out``/``workers`` (from the command line) win over the file's values. A path that
    does not exist may name a grid shipped with fedloom (fedloom.resources: the README's grids, from a wheel)."""
    path = packaged(path)
    data = _read(path)
    unknown = sorted(set(data) - {"grid", "base", "axes"})
    if unknown:
        raise ConfigError(f"grid {path}: unknown table(s) {unknown}; a grid has [grid], [base] and [axes]")
    meta = _table(data, "grid", path)
    bad = sorted(set(meta) - GRID_KEYS)
    if bad:
        raise ConfigError(f"grid {path}: unknown [grid] key(s) {bad}; valid: {', '.join(sorted(GRID_KEYS))}")
    name = _text(meta.get("name", path.stem), "[grid] name", path)
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    cores = os.cpu_count() or 1
    # the file's values are checked even when the command line overrides them: the file is run again later
    file_out = _text(meta.get("out", f"runs/bench/{name}"), "[grid] out", path)
    file_workers = _count(meta.get("workers", cores), "[grid] workers", path)
    return GridSpec(path=path, name=name, out=Path(out or file_out),
                    seeds=_int_list(meta.get("seeds", [1]), "[grid] seeds", path),
                    base=_base_raw(_table(data, "base", path), list(overrides)),
                    axes=_axes(data.get("axes", {}), path),
                    workers=workers or file_workers,
                    threads=_count(meta.get("threads", 1), "[grid] threads", path, most=cores))


# ------------------------------------------------------------------------------------------------ expansion
def _apply_axis(raw: dict[str, Any], name: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, dict):  # {fedprox = {mu = 0.1}} inside a table-valued axis
                for sub, leaf in inner.items():
                    set_value(raw, f"{key}.{sub}", leaf)
            else:
                set_value(raw, key, inner)
    else:
        set_value(raw, name, value)


def expand(spec: GridSpec) -> Iterator[dict[str, Any]]:
    """Raw configs of every (seed, axis combination); seeds outermost, so seed 1 of everything runs first
    and a partial grid already gives a complete (one-seed) report."""
    names = list(spec.axes)
    for seed in spec.seeds:
        for combo in itertools.product(*(spec.axes[n] for n in names)):
            raw = copy.deepcopy(spec.base)
            for name, value in zip(names, combo):
                _apply_axis(raw, name, value)
            raw["seed"] = seed
            yield raw


def _selected(raw: dict[str, Any]) -> set[str]:
    seams = {canonical(name) for name in str(raw.get("transform") or "").split(",") if name.strip()}
    seams.add(canonical(str(raw.get("aggregator", "mean"))))
    if raw.get("attack"):
        seams |= {canonical(str(raw["attack"])), "attack"}
    engine = canonical(str(raw.get("engine") or "serial"))
    table = raw.get("options", {}).get(engine, {})
    inner = raw.get("worker_engine") or table.get("worker_engine") or table.get("worker-engine")
    engines = {engine} | ({canonical(str(inner))} if inner else set())
    return {canonical(str(raw[k])) for k in ("algorithm", "dataset", "model") if raw.get(k)} | \
        ({"fedavg"} if not raw.get("algorithm") else set()) | seams | engines


def _prune_options(raw: dict[str, Any], models: set[str]) -> dict[str, Any]:
    """Drop option tables of components this run does not use (they configure other runs of the grid).
    Without an explicit model every model's table stays: the dataset picks the model later."""
    keep = _selected(raw) | (set() if raw.get("model") else models)
    raw["options"] = {ns: opts for ns, opts in raw.get("options", {}).items() if ns in keep}
    return raw


# ------------------------------------------------------------------------------------------------ validation
def _registries() -> tuple[Any, set[str], set[str]]:
    from fedloom.algorithms import ALGORITHMS
    from fedloom.models import MODELS
    import fedloom.data.datasets  # noqa: F401  (registration)
    from fedloom.seams import known_namespaces

    return ALGORITHMS, known_namespaces(), set(MODELS.names())


def check_algorithms(spec: GridSpec, raws: list[dict[str, Any]]) -> None:
    """Name every unknown algorithm of the grid in one message, before anything else is checked."""
    algorithms, _, _ = _registries()
    wanted = dict.fromkeys(canonical(str(r.get("algorithm", "fedavg"))) for r in raws)
    unknown = [name for name in wanted if name not in algorithms]
    if unknown:
        raise ConfigError(f"grid {spec.path}: unknown algorithm(s) {', '.join(unknown)} "
                          f"(registered: {', '.join(algorithms.names())})")


def check_namespaces(spec: GridSpec, raws: list[dict[str, Any]]) -> None:
    """An option table must name a component; a typo such as [base.fedprx] would otherwise vanish."""
    _, known, _ = _registries()
    used = {ns for raw in raws for ns in raw.get("options", {})}
    typos = sorted(used - known)
    if typos:
        raise ConfigError(f"grid {spec.path}: option table(s) {typos} name no algorithm, dataset, model, engine "
                          f"or seam (transform, aggregator, attack)")


def run_label(cfg: RunConfig, digest: str) -> str:
    """Folder name: readable prefix + the identity hash (the hash alone decides identity)."""
    return f"{cfg.algorithm}-{cfg.dataset}-s{cfg.seed}-{digest[:12]}"


def plan(spec: GridSpec) -> list[PlannedRun]:
    """Expand and validate the whole grid; ConfigError (naming the run) on the first bad config."""
    from fedloom.run import resolve_config

    raws = list(expand(spec))
    check_algorithms(spec, raws)
    check_namespaces(spec, raws)
    _, _, models = _registries()
    runs: dict[str, PlannedRun] = {}
    for raw in raws:
        raw = _prune_options(raw, models)
        try:
            cfg = resolve_config(dataclasses.replace(build_config(raw), out="-"))
        except ConfigError as exc:
            raise ConfigError(f"grid {spec.path}, run {_describe(raw)}: {exc}") from None
        digest = config_hash(cfg)
        if digest not in runs:
            label = run_label(cfg, digest)
            folder = spec.out / label
            cfg = dataclasses.replace(cfg, out=str(folder), quiet=True, threads=spec.threads, overwrite=False)
            runs[digest] = PlannedRun(label, cfg, digest, folder)
    return list(runs.values())


def _describe(raw: dict[str, Any]) -> str:
    keys = ("algorithm", "dataset", "partition", "seed")
    return "(" + ", ".join(f"{k}={raw[k]}" for k in keys if k in raw) + ")"
