"""Client sizes for quantity skew (used by the ``quantity`` and ``inner-dirichlet`` partitioners).

With N clients, n samples and a minimum size m, every client first gets m samples and the remaining
n - N·m samples are shared in proportions q (largest-remainder rounding, so sizes sum exactly to n):

    n_k = m + round_LR((n - N·m) · q_k)

The proportions q come from ``spec.quantity_dist``:

- ``equal``:     n_k = ⌊n/N⌋ or ⌈n/N⌉ (no quantity skew).
- ``power-law``: q_k ∝ w_k, w_k ~ Pareto(a): P(w > t) = t^-a for t >= 1 (a = ``size_alpha``, the tail index;
                 smaller a = heavier tail = more skew; a <= 1 has an infinite mean: a few clients hold most data).
- ``lognormal``: q_k ∝ exp(σ·z_k), z_k ~ N(0, 1) (σ = ``sigma``; larger σ = more skew; σ = 0: equal). The size
                 model of FedProx's Synthetic data and FedLab's "unbalanced" partitions.
- ``dirichlet``: q ~ Dir(a·1_N) (a = ``size_alpha``; smaller a = more skew, a -> inf: equal), as the quantity-
                 based skew of Li et al. 2022 (NIID-Bench, "Federated Learning on Non-IID Data Silos").

Adding m before sharing (instead of redrawing until every client has m samples, as NIID-Bench does) guarantees
the minimum in one draw; it flattens the smallest sizes only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedloom.data.base import PartitionSpec
from fedloom.data.partitioners.common import check_positive, largest_remainder
from fedloom.errors import ConfigError


def _power_law(spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    check_positive(spec.size_alpha, "size_alpha (Pareto tail index)", spec.name)
    # w = exp(E / a) with E ~ Exp(1) is Pareto(a); kept in log space so that tiny a cannot overflow
    return _normalized_exp(rng.standard_exponential(spec.num_clients) / spec.size_alpha)


def _lognormal(spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    if not (np.isfinite(spec.sigma) and spec.sigma >= 0):
        raise ConfigError(f"{spec.name}: sigma (log-normal size spread) must be >= 0 (got {spec.sigma})")
    return _normalized_exp(spec.sigma * rng.standard_normal(spec.num_clients))


def _normalized_exp(log_w: np.ndarray) -> np.ndarray:
    """exp(log_w) scaled by a constant (irrelevant for proportions) so that it cannot overflow."""
    return np.exp(log_w - log_w.max())


def _dirichlet(spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    check_positive(spec.size_alpha, "size_alpha (Dirichlet concentration over sizes)", spec.name)
    q = rng.dirichlet(np.full(spec.num_clients, float(spec.size_alpha)))
    # tiny alpha can underflow to an all-zero draw; then one random client gets everything
    return q if q.sum() > 0 else np.eye(spec.num_clients)[rng.integers(spec.num_clients)]


WEIGHTS: dict[str, Callable[[PartitionSpec, np.random.Generator], np.ndarray]] = {
    "power-law": _power_law,
    "lognormal": _lognormal,
    "dirichlet": _dirichlet,
}
SIZE_DISTS = ("equal", *WEIGHTS)


def size_dist(spec: PartitionSpec, default: str) -> str:
    """The validated quantity distribution name (``spec.quantity_dist`` or ``default`` when it is None)."""
    name = (spec.quantity_dist or default).strip().lower().replace("_", "-")
    name = {"powerlaw": "power-law", "log-normal": "lognormal"}.get(name, name)
    if name not in SIZE_DISTS:
        raise ConfigError(f"unknown quantity_dist '{spec.quantity_dist}'. Valid choices: {', '.join(SIZE_DISTS)}")
    return name


def client_sizes(n: int, spec: PartitionSpec, rng: np.random.Generator, default: str) -> np.ndarray:
    """Per-client sizes (int64, sum n, each >= spec.min_samples); see the module docstring for the formula.

    Call after ``check_clients`` (which guarantees n >= N·min_samples).
    """
    dist, k, m = size_dist(spec, default), spec.num_clients, spec.min_samples
    if dist == "equal":
        return np.full(k, n // k, dtype=np.int64) + (np.arange(k) < n % k)
    return m + largest_remainder(n - k * m, WEIGHTS[dist](spec, rng))
