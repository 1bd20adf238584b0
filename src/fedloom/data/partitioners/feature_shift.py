"""Feature-shift partition: each client is a different input domain (FedBN, Li et al., ICLR 2021), combinable
with any label/quantity skew.

Indices come from the ``base_partition`` partitioner (default iid; e.g. dirichlet for label skew plus feature
shift). Client k belongs to domain d = k mod ``domains``; every sample of client k (train and test) gets domain
d's transform: rotation, contrast, colour and/or Gaussian noise (``feature_shift``, comma-separated; the formulas
are in partitioners/domain_transforms.py). Domain 0 is the original data; larger ``shift_strength`` = more shift.
Labels never change.

Because every sample belongs to exactly one client, the transform is applied once to the pooled inputs when the
federated data are built (federated.py calls this partitioner's ``transform_inputs``), so engines see ordinary
index arrays. The transform is deterministic given (data seed, parameters, partition) and is recomputed rather
than cached; the cache key and the partition hash cover its parameters. Not combinable with test_split=global
(a shared test set cannot be in every client's domain at once).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.domain_transforms import apply_in_chunks, check_inputs, domain_transform, parse_kinds
from fedloom.errors import ConfigError
from fedloom.registry import canonical


@PARTITIONERS.register("feature-shift")
def feature_shift_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Client domains (rotate/contrast/color/noise) over a base partition.

    Returns the base partitioner's indices; the inputs are transformed later by ``transform_inputs``.
    """
    check_spec(spec)
    base = canonical(spec.base_partition)
    return PARTITIONERS.get(base)(labels, dataclasses.replace(spec, name=base), rng, natural_ids)


def check_spec(spec: PartitionSpec) -> None:
    """ConfigError for invalid feature-shift parameters."""
    parse_kinds(spec.feature_shift)
    if canonical(spec.base_partition) == "feature-shift":
        raise ConfigError("feature-shift: base_partition cannot be feature-shift itself (e.g. iid or dirichlet)")
    PARTITIONERS.get(spec.base_partition)  # unknown name -> ConfigError listing the choices
    if not (isinstance(spec.domains, (int, np.integer)) and spec.domains >= 1):
        raise ConfigError(f"feature-shift: domains must be an integer >= 1 (got {spec.domains})")
    if not (np.isfinite(spec.shift_strength) and spec.shift_strength >= 0):
        raise ConfigError(f"feature-shift: shift_strength must be >= 0 (got {spec.shift_strength})")


def transform_inputs(x: torch.Tensor, parts: list[np.ndarray], spec: PartitionSpec) -> torch.Tensor:
    """A copy of the pooled inputs with client k's samples (``parts[k]``) in domain k mod spec.domains."""
    check_spec(spec)
    kinds = parse_kinds(spec.feature_shift)
    check_inputs(x, kinds)
    out = x.clone()
    scale = float(x.float().std()) if x.numel() > 1 else 1.0
    for d in range(spec.domains):
        members = [np.asarray(p) for k, p in enumerate(parts) if k % spec.domains == d]
        idx = torch.from_numpy(np.sort(np.concatenate(members))) if members else torch.zeros(0, dtype=torch.long)
        if d == 0 or not len(idx):
            continue  # domain 0 is the original data
        fn = domain_transform(kinds, d, spec.domains, spec.shift_strength, scale, spec.seed)
        out[idx] = apply_in_chunks(x[idx], fn)
    return out


feature_shift_partition.transform_inputs = transform_inputs  # type: ignore[attr-defined]
feature_shift_partition.params = (  # type: ignore[attr-defined]
    "base_partition", "feature_shift", "domains", "shift_strength",
)
