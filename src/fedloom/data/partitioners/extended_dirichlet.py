"""Extended Dirichlet partition: C classes per client, Dirichlet proportions within each class (PFLlib's "exdir",
from Li et al. 2023, arXiv:2311.03154; the #C=k label skew of NIID-Bench combined with Dir(alpha) quantities).

1. Class sets. Fill an N x C table (client i's row lists its C = ``classes_per_client`` distinct classes) in
   row-major order: the first min(K, N·C) cells take a random permutation of the K classes, so every class has
   an owner whenever N·C >= K; every other cell takes a uniformly random class not yet in its row. If N·C < K,
   the classes without an owner are left out of the partition.
2. Quantities. For each class c with owners O_c and n_c samples: p_c ~ Dir(alpha · 1_|O_c|) over O_c (the
   Dirichlet aggregation property makes this the same law as PFLlib's Dir(alpha · 1_N) restricted to O_c and
   renormalized); like PFLlib and ``dirichlet``, owners already holding >= n/N samples get share 0 (then p_c is
   renormalized); class c's shuffled samples are cut in proportions p_c.

    q_{i,c} = 1[i in O_c] · p_{c,i}    (client i's share of class c)

Skew: smaller alpha = more skew (alpha -> 0: each class goes to about one of its owners, clients hold ~1 class;
alpha -> inf: each class is split equally among its owners, clients hold C classes in equal amounts); fewer
classes per client = more skew; C = K is ``dirichlet``. Minimum size: redraw up to MAX_RESAMPLES times, then
repair the best draw by moving samples of a client's own C classes from the largest clients (DataError if
impossible).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import dirichlet_cut, dirichlet_setup, draw_until_min_size
from fedloom.errors import ConfigError

MAX_RESAMPLES = 50


@PARTITIONERS.register("extended-dirichlet")
def extended_dirichlet_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """C classes per client with Dir(alpha) quantities; see the module docstring."""
    labels, by_class = dirichlet_setup(labels, spec, "extended-dirichlet")
    if not 1 <= spec.classes_per_client <= len(by_class):
        raise ConfigError(f"extended-dirichlet: classes_per_client must be between 1 and the number of classes "
                          f"({len(by_class)}); got {spec.classes_per_client}")

    def draw() -> tuple[np.ndarray, np.ndarray]:
        allowed = class_sets(len(by_class), spec, rng)
        return draw_owner(by_class, len(labels), allowed, spec, rng), allowed

    return draw_until_min_size(draw, labels, spec, rng, "extended-dirichlet", MAX_RESAMPLES)


def class_sets(num_classes: int, spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    """[clients, classes] boolean mask of each client's C classes (step 1 of the module docstring)."""
    n, c = spec.num_clients, spec.classes_per_client
    table = np.full(n * c, -1, dtype=np.int64)
    covered = min(num_classes, n * c)
    table[:covered] = rng.permutation(num_classes)[:covered]
    table = table.reshape(n, c)
    allowed = np.zeros((n, num_classes), dtype=bool)
    for i, row in enumerate(table):
        have = row[row >= 0]
        rest = np.setdiff1d(np.arange(num_classes), have)
        allowed[i, np.concatenate([have, rng.choice(rest, size=c - len(have), replace=False)])] = True
    return allowed


def draw_owner(
    by_class: list[np.ndarray], n: int, allowed: np.ndarray, spec: PartitionSpec, rng: np.random.Generator
) -> np.ndarray:
    """Per-sample owner array (-1 for classes nobody holds) for one draw of step 2."""
    owner = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(spec.num_clients, dtype=np.int64)
    for c, idx in enumerate(by_class):
        owners = np.flatnonzero(allowed[:, c])
        if not len(owners):
            continue
        dirichlet_cut(idx, owners, spec.alpha, owner, sizes, rng)
    return owner


extended_dirichlet_partition.params = ("alpha", "classes_per_client")  # type: ignore[attr-defined]
