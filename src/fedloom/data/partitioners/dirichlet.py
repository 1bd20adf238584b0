"""Dirichlet label-skew partition (Hsu, Qi & Brown, 2019, arXiv:1909.06335; PFLlib's "dir" split).

For each class c, p_c ~ Dir(alpha * 1_N) over the N clients and class c's shuffled samples are cut in the
proportions p_c. Smaller alpha means more skew: alpha -> 0 puts each class on very few clients, alpha -> inf
gives every client the global label distribution. Like PFLlib, a client that already holds >= total / N samples
gets p_j = 0 for the remaining classes (then p_c is renormalized), which keeps client sizes balanced.

The whole partition is redrawn until every client has >= min_samples samples. If that has not happened after
MAX_RESAMPLES draws (common with many clients and small alpha, where PFLlib loops forever), the draw with the
largest minimum is repaired: clients below the minimum take samples from the currently largest client,
preferring a class the receiver already holds (else the donor's majority class), so label skew is mostly kept.
This fails only if the dataset has fewer than N * min_samples samples.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import dirichlet_cut, dirichlet_setup, draw_until_min_size

MAX_RESAMPLES = 50


@PARTITIONERS.register("dirichlet")
def dirichlet_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Label-skewed split with per-class Dir(alpha) proportions; see the module docstring."""
    labels, by_class = dirichlet_setup(labels, spec, "dirichlet")
    return draw_until_min_size(lambda: (draw_owner(by_class, len(labels), spec, rng), None), labels, spec, rng,
                               "dirichlet", MAX_RESAMPLES)


def draw_owner(by_class: list[np.ndarray], n: int, spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    """One draw of the PFLlib-style Dirichlet split, as a per-sample owner array."""
    owner = np.empty(n, dtype=np.int64)
    sizes = np.zeros(spec.num_clients, dtype=np.int64)
    everyone = np.arange(spec.num_clients)
    for idx in by_class:
        dirichlet_cut(idx, everyone, spec.alpha, owner, sizes, rng)
    return owner


dirichlet_partition.params = ("alpha",)  # type: ignore[attr-defined]
