"""Building the upload pipeline and the aggregator of a run from its config, with every check that needs no
data done before training (unknown names, option ranges, an order that makes no sense, Krum's cohort size, a
robust aggregator under a server that does not average)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.attacks import ATTACKS, THREAT_NAMESPACE, THREATS, Attack, Colluding
from fedloom.pipeline.chain import UploadPipeline
from fedloom.pipeline.transforms import TRANSFORMS, UploadTransform
from fedloom.registry import Registry, canonical

import fedloom.pipeline.defenses  # noqa: F401,E402,I001  (registers the robust aggregators)
import fedloom.pipeline.privacy  # noqa: F401,E402,I001  (registers --transform dp)
import fedloom.pipeline.secagg  # noqa: F401,E402,I001  (registers --aggregator secagg)
import fedloom.pipeline.compression  # noqa: F401,E402,I001  (registers randk, qsgd, signsgd, powersgd...)


def transform_names(spec: Optional[str]) -> list[str]:
    """``"clip, topk"`` → ``["clip", "topk"]`` (canonical, validated names)."""
    if not spec:
        return []
    names = [canonical(part) for part in spec.split(",")]
    if any(not name for name in names):
        raise ConfigError(f"--transform {spec!r}: empty name in the list (use e.g. --transform clip,quantize)")
    for name in names:
        TRANSFORMS.get(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--transform {spec!r} names a transform twice")
    return [TRANSFORMS.get(name).registry_name for name in names]


def _make(registry: Registry, name: str, cfg: Any) -> Any:
    from fedloom.config import make_component

    return make_component(registry, name, dict(cfg.options.get(canonical(name), {})))


def build_transforms(cfg: Any) -> tuple[tuple[str, UploadTransform], ...]:
    chain: list[tuple[str, UploadTransform]] = []
    for name in transform_names(cfg.transform):
        transform = _make(TRANSFORMS, name, cfg)
        transform.check_chain([t for _, t in chain])
        chain.append((name, transform))
    return tuple(chain)


def build_attack(cfg: Any, num_clients: int) -> Optional[Attack]:
    """The run's attack with its cohort-dependent defaults resolved (None without ``--attack``)."""
    if not cfg.attack:
        return None
    return _make(ATTACKS, cfg.attack, cfg).bind(cohort_size(cfg.join_ratio, num_clients))


def build_pipeline(cfg: Any, num_clients: int, input_shape: Optional[tuple[int, ...]] = None,
                   num_classes: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> UploadPipeline:
    """The upload pipeline and the threat model. With the data's facts (input shape, classes, dtype) the attack
    also checks that it fits the dataset (a trigger inside the image), still before training."""
    attack = build_attack(cfg, num_clients)
    malicious: frozenset[int] = frozenset()
    sampler = None
    if attack is not None:
        threat = _make(THREATS, THREAT_NAMESPACE, cfg)
        malicious = threat.malicious_clients(cfg.seed, num_clients)
        sampler = threat.sampler(malicious)
        if input_shape is not None:
            attack.check_data(tuple(input_shape), int(num_classes), dtype or torch.float32)
    elif cfg.options.get(THREAT_NAMESPACE):
        raise ConfigError("--attack.* options were given without --attack NAME")
    transforms = tuple((name, t.bind(cfg, num_clients)) for name, t in build_transforms(cfg))
    return UploadPipeline(cfg.seed, transforms, attack, malicious, _cohort_sampler(sampler, transforms))


def _cohort_sampler(threat_sampler: Any, transforms: tuple[tuple[str, UploadTransform], ...]) -> Any:
    """The threat model's sampler, or a transform's (DP's Poisson sampling); both at once: ConfigError."""
    own = [(name, t.cohort_sampler) for name, t in transforms if getattr(t, "cohort_sampler", None) is not None]
    if own and threat_sampler is not None:
        raise ConfigError(f"--transform {own[0][0]} samples clients itself (Poisson sampling) and the attack's "
                          f"threat model fixes the attackers per round: use --{own[0][0]}.sampling fixed")
    return own[0][1] if own else threat_sampler


def build_aggregator(cfg: Any, algorithm: Any, num_clients: int,
                     pipeline: Optional[UploadPipeline] = None) -> Optional[Aggregator]:
    """The configured aggregator, then each transform's server stage around it (client-level DP adds its noise
    to the sum there), with the cohort checked again for what the stages made of it."""
    check_compact_upload(algorithm, pipeline.transforms if pipeline is not None else ())
    aggregator = _configured_aggregator(cfg, algorithm, num_clients)
    for _, transform in (pipeline.transforms if pipeline is not None else ()):
        aggregator = transform.server_stage(aggregator, algorithm)
    if aggregator is not None:
        aggregator.check_cohort(cohort_size(cfg.join_ratio, num_clients))
    return aggregator


def check_compact_upload(algorithm: Any, transforms: tuple[tuple[str, UploadTransform], ...]) -> None:
    """An algorithm whose upload is a compact message (FedKSeed's seed indices and scalars) keeps it compact
    through the transforms before the first codec (they act on its scalars); one that does not mean the same
    there (client-level DP's clipping bound is the sensitivity of the decoded update) is refused."""
    if not getattr(algorithm, "compact_upload", False):
        return
    for name, transform in transforms:
        if transform.has_codec:
            return
        if not transform.acts_on_compact:
            raise ConfigError(f"--transform {name} acts on the decoded update, but {algorithm.registry_name} "
                              f"uploads a compact message (seed indices and scalars) that it would turn dense: "
                              f"use --transform clip,gaussian (clipping and noise on the scalars) or put a codec "
                              f"before {name}")


def _configured_aggregator(cfg: Any, algorithm: Any, num_clients: int) -> Optional[Aggregator]:
    """None for the plain mean (the algorithm's own weighted mean: bit-for-bit today's path). An omniscient
    attack wraps the aggregator, the mean included, in ``Colluding`` (it needs every upload of the round)."""
    name = AGGREGATORS.get(cfg.aggregator).registry_name
    aggregator = _make(AGGREGATORS, name, cfg)
    attack = build_attack(cfg, num_clients)
    colluding = attack is not None and attack.omniscient
    if not aggregator.needs_all and not colluding:
        return None
    if algorithm.aggregation == "all":
        what = f"--attack {attack.registry_name} crafts uploads on the server" if colluding and not \
            aggregator.needs_all else f"--aggregator {name} replaces an averaging server's mean"
        raise ConfigError(f"{what}, but {algorithm.registry_name}'s server does not average uploads (it reads "
                          f"each one); use an averaging algorithm" + ("" if colluding else " or --aggregator mean"))
    aggregator.check_cohort(cohort_size(cfg.join_ratio, num_clients))
    return Colluding(attack, aggregator) if colluding else aggregator


def cohort_size(join_ratio: float, num_clients: int) -> int:
    """The number of clients a round samples (run.sample_cohort's rule)."""
    return min(num_clients, max(1, int(join_ratio * num_clients + 1e-9)))
