"""Engine options as namespaced tables, like an algorithm's: ``--processes.workers 2``,
``--vectorized.pack-size 16``, a ``[processes]`` table in a config file. Each engine registers its options
dataclass in ENGINE_OPTIONS (engines/base.py) under its own name; its fields declare, with ``engine_option``,
the RunConfig field that stores them.

Storage: the values live in RunConfig fields that predate the namespaces (``workers``, ``worker_engine``,
``worker_timeout``, ``pack_size``), whose flags (``--workers``, ``--worker-engine``, ``--worker-timeout``,
``--pack-size``) stay as aliases. ``resolve_engine_options`` moves every engine table onto those fields and
drops the table, so the resolved config, the run folder's config.toml and the run's identity hash are the same
whichever spelling was used, and every run folder written before the namespaces existed still resolves to its
own hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from fedloom.config import RUN_FIELDS, RunConfig, hp, make_component
from fedloom.engines.base import ENGINE_OPTIONS, ENGINES
from fedloom.errors import ConfigError

STORED_AS = "stored_as"


def engine_option(default: Any, stored_as: str, help: str, **ranges: Any) -> Any:
    """A field of an engine's options dataclass, stored in the RunConfig field ``stored_as`` (whose flag is then
    the option's alias; its default must be that field's), with its range declared as ``config.hp`` does
    (``ge=1``, ``choices=(...)``), checked by make_component."""
    if stored_as not in RUN_FIELDS:
        raise ValueError(f"engine option stored as {stored_as!r}: RunConfig has no such field")
    declared = hp(default, help=help, **ranges)
    return field(default=default, metadata={**declared.metadata, STORED_AS: stored_as})


def stored_fields(cls: type) -> dict[str, str]:
    """Option name → the RunConfig field that stores it, for an engine's options dataclass."""
    return {f.name: f.metadata[STORED_AS] for f in dataclasses.fields(cls)}


def flag(name: str) -> str:
    return name.replace("_", "-")


def engines_in_use(cfg: RunConfig) -> list[str]:
    """The selected engine, and the engine inside its workers when it has some (``worker_engine``)."""
    engine = ENGINES.get(cfg.engine).registry_name
    used = [engine]
    if "worker_engine" in stored_fields(ENGINE_OPTIONS.get(engine)).values() and cfg.worker_engine in ENGINES:
        used.append(ENGINES.get(cfg.worker_engine).registry_name)
    return used


def resolve_engine_options(cfg: RunConfig) -> RunConfig:
    """Every ``[<engine>]`` option table of ``cfg`` validated (its options dataclass), moved onto the RunConfig
    fields that store it, and removed from ``cfg.options``. ConfigError when an option and its alias were both
    given with different values (an alias given at its default cannot be told from no alias: the option wins),
    or for the table of an engine the run does not use (a typo, most likely)."""
    tables = {namespace: table for namespace, table in cfg.options.items() if namespace in ENGINE_OPTIONS}
    if not tables:
        return cfg
    updates: dict[str, Any] = {}
    for namespace, table in tables.items():
        options = make_component(ENGINE_OPTIONS, namespace, dict(table))
        stored = stored_fields(type(options))
        for name in dict.fromkeys(key.replace("-", "_") for key in table):
            target, value = stored[name], getattr(options, name)
            given = getattr(cfg, target)
            if given != RUN_FIELDS[target].default and given != value:
                raise ConfigError(f"--{namespace}.{flag(name)} {value} disagrees with {target} = {given} (its alias "
                                  f"--{flag(target)}, from the command line or a config file); give only one of them")
            updates[target] = value
    cfg = dataclasses.replace(cfg, **updates,
                              options={ns: table for ns, table in cfg.options.items() if ns not in tables})
    used = engines_in_use(cfg)
    for namespace in tables:
        if namespace not in used:
            raise ConfigError(f"options for engine '{namespace}' were given, but the run uses "
                              f"{' with workers running '.join(used)}; remove them or select that engine "
                              f"(--engine {namespace})")
    return cfg
