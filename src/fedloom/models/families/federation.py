"""A run's family (``--model-family NAME``) turned into the per-client models of the federation: the one place
that the run configuration (resolve_config) and the runtime builder (engines/build.py, also called by every
sharded worker) ask, so that a family plugs into issue 17's per-client models without a special case."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

from fedloom.errors import ConfigError
from fedloom.models.base import InitParams, SplitModel
from fedloom.models.families import FAMILIES, ModelFamily, build_family
from fedloom.registry import canonical

if TYPE_CHECKING:
    import torch

    from fedloom.config import RunConfig


def resolve_family(cfg: "RunConfig") -> Optional[str]:
    """The canonical family name (None without --model-family); one ConfigError for an unknown name, for
    --model given too, or for bad family options."""
    if not cfg.model_family:
        return None
    name = canonical(FAMILIES.get(cfg.model_family).registry_name)
    if cfg.model:
        raise ConfigError(f"--model {cfg.model} and --model-family {cfg.model_family} both say which model each "
                          f"client has; give one of them")
    family_of(dataclasses.replace(cfg, model_family=name))  # its options, checked before any data
    return name


def family_of(cfg: "RunConfig") -> ModelFamily:
    name = canonical(FAMILIES.get(cfg.model_family).registry_name)
    return build_family(name, dict(cfg.options.get(name, {})))


def client_labels(cfg: "RunConfig") -> list[str]:
    """Which member each client slot has over one period (client i: entry i mod len)."""
    return list(family_of(cfg).labels())


def describe(cfg: "RunConfig") -> str:
    """How the run chose its models, for messages: ``--model-family X`` or ``--model a,b``."""
    return f"--model-family {cfg.model_family}" if cfg.model_family else f"--model {cfg.model}"


def build_family_models(cfg: "RunConfig", input_shape: tuple[int, ...], num_classes: int,
                        vocab_size: Optional[int],
                        device: "torch.device") -> tuple["RunConfig", list[tuple[SplitModel, InitParams]]]:
    """Every distinct member of the family (in order of first appearance), built like any fedloom model; the
    config gets the family's canonical name and its resolved options table."""
    family = family_of(cfg)
    name = family.registry_name
    cfg = dataclasses.replace(cfg, model_family=name, options={**cfg.options, name: dataclasses.asdict(family)})
    built = []
    for label in dict.fromkeys(family.labels()):
        model = family.build_member(label, input_shape, num_classes, cfg.seed, vocab_size).to(device)
        model.requires_grad_(False)  # the template's own tensors are never trained
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        built.append((model, InitParams(params, cfg.seed, model)))
    return cfg, built


def family_table() -> list[dict[str, Any]]:
    """name, members and description of every family (docs, ``fedloom list``)."""
    return [{"name": name, "members": cls.members, "heads": cls.heads, "description": cls.description}
            for name, cls in FAMILIES.items()]
