"""Partitioners: labels -> per-client index arrays. Importing this package registers them in PARTITIONERS."""

from fedloom.data.partitioners.dirichlet import dirichlet_partition
from fedloom.data.partitioners.iid import iid_partition
from fedloom.data.partitioners.natural import natural_partition
from fedloom.data.partitioners.pathological import pathological_partition

__all__ = ["dirichlet_partition", "iid_partition", "natural_partition", "pathological_partition"]
