"""Quantity-skew partition: clients differ in size, labels are IID within each client.

Sizes n_k come from ``quantity_dist`` (default power-law; see partitioners/sizes.py for the formulas:
power-law with Pareto tail index ``size_alpha``, log-normal with ``sigma``, Dirichlet over sizes with
``size_alpha``, or equal). A random permutation of all samples is then cut into consecutive runs of n_k
samples, so every client's label mix is a uniform sample of the global one. More skew: smaller ``size_alpha``
(power-law, dirichlet) or larger ``sigma`` (lognormal). Every client gets >= min_samples by construction.
References: Li et al., ICDE 2022 (NIID-Bench, quantity-based skew, Dirichlet sizes); FedLab's unbalanced split
(log-normal sizes); Li et al., MLSys 2020 (FedProx: power-law sizes).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import as_labels, check_clients, finish
from fedloom.data.partitioners.sizes import client_sizes

DEFAULT_DIST = "power-law"


@PARTITIONERS.register("quantity")
def quantity_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Quantity skew: power-law/log-normal/Dirichlet client sizes, IID labels (module docstring)."""
    n = len(as_labels(labels))
    check_clients(n, spec)
    sizes = client_sizes(n, spec, rng, DEFAULT_DIST)
    return finish(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


quantity_partition.params = ("quantity_dist", "size_alpha", "sigma")  # type: ignore[attr-defined]
