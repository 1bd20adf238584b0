"""The run config's seams in one place: upload transforms, the aggregator, the attack, the round pattern and
its topology — their names resolved (case-insensitive, with suggestions), their option tables validated and
filled in, and the option namespaces they own (``--clip.norm``, ``--krum.f``, ``--attack.fraction``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedloom.config import RunConfig, make_component
from fedloom.engines.infobatch import LOCAL_TRAINING  # registers infobatch
from fedloom.engines.local_training import selected_local_training
from fedloom.errors import ConfigError
from fedloom.patterns import PATTERNS
from fedloom.patterns.topology import TOPOLOGIES
from fedloom.pipeline.aggregators import AGGREGATORS
from fedloom.pipeline.attacks import ATTACKS, THREAT_NAMESPACE, THREATS
from fedloom.pipeline.build import transform_names
from fedloom.pipeline.transforms import TRANSFORMS
from fedloom.registry import Registry, canonical

#: Registries whose entries have option tables of their own, besides algorithms, datasets and models.
SEAM_REGISTRIES: tuple[Registry, ...] = (TRANSFORMS, AGGREGATORS, ATTACKS, THREATS, PATTERNS, LOCAL_TRAINING)


def _pattern_table(cfg: RunConfig) -> list[str]:
    """The round pattern's option table (``[gossip]``), when its class declares options."""
    return [cfg.pattern] if dataclasses.is_dataclass(PATTERNS.get(cfg.pattern)) else []


def resolve_seams(cfg: RunConfig) -> RunConfig:
    """Canonical names for every seam; ConfigError (listing the valid names) for an unknown one."""
    names = transform_names(cfg.transform)
    return dataclasses.replace(
        cfg, transform=",".join(names) if names else None,
        aggregator=AGGREGATORS.get(cfg.aggregator).registry_name,
        attack=ATTACKS.get(cfg.attack).registry_name if cfg.attack else None,
        pattern=PATTERNS.get(cfg.pattern).registry_name, topology=_topology_name(cfg.topology))


def _topology_name(name: str) -> str:
    TOPOLOGIES.get(name)  # ConfigError with the valid names
    return canonical(name)


def seam_namespaces(cfg: RunConfig) -> list[str]:
    """Option tables this run's seams read."""
    selected = transform_names(cfg.transform) + [cfg.aggregator] + _pattern_table(cfg)
    if cfg.attack:
        selected += [cfg.attack, THREAT_NAMESPACE]
    return selected + selected_local_training(cfg.options)  # the local-training seam: its table selects it


def seam_options(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Every selected seam's options, validated and with defaults filled in (for the run folder's config)."""
    tables = [(TRANSFORMS, name) for name in transform_names(cfg.transform)] + [(AGGREGATORS, cfg.aggregator)]
    tables += [(PATTERNS, name) for name in _pattern_table(cfg)]
    tables += [(LOCAL_TRAINING, name) for name in _local_training(cfg)]
    if cfg.attack:
        tables += [(ATTACKS, cfg.attack), (THREATS, THREAT_NAMESPACE)]
    elif cfg.options.get(THREAT_NAMESPACE):
        raise ConfigError("--attack.* options were given without --attack NAME")
    options = {}
    for registry, name in tables:
        instance = make_component(registry, name, dict(cfg.options.get(name, {})))
        if dataclasses.fields(instance):  # components without options leave no empty table behind
            options[name] = dataclasses.asdict(instance)
    return options


def _local_training(cfg: RunConfig) -> list[str]:
    """The local-training components whose table the run gives (InfoBatch), checked against the transforms."""
    names = selected_local_training(cfg.options)
    if len(names) > 1:
        raise ConfigError(f"options of {len(names)} local-training components were given ({', '.join(names)}); "
                          f"choose one")
    if names and "sample-dp" in transform_names(cfg.transform):
        raise ConfigError(f"--{names[0]}.* cannot be combined with --transform sample-dp (DP-SGD's accounting "
                          f"assumes every sample is visited each epoch); remove one of them")
    return names


def known_namespaces() -> set[str]:
    """Every name an option table may carry: components, seams and engines (``[processes]``)."""
    from fedloom.algorithms import ALGORITHMS
    from fedloom.data.base import DATASETS
    from fedloom.engines.base import ENGINE_OPTIONS
    from fedloom.models import MODELS

    known = set(ALGORITHMS.names()) | set(DATASETS.names()) | set(MODELS.names()) | set(ENGINE_OPTIONS.names())
    for registry in SEAM_REGISTRIES:
        known |= set(registry.names())
    return known
