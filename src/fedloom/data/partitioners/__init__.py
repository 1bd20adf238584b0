"""Partitioners: labels -> per-client index arrays, registered by name in PARTITIONERS.

Every module of this package is imported here, so adding a partitioner is adding one file with a function
``f(labels, spec, rng, natural_ids) -> list[np.ndarray]`` under ``@PARTITIONERS.register("name")``. Optional
attributes of the function: ``params`` (the PartitionSpec fields it reads, shown in summaries) and
``transform_inputs(x, parts, spec) -> x`` (feature-shift: a per-client input transform applied when the
federated data are built).
"""

import importlib
import pkgutil

from fedloom.data.base import PARTITIONERS

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PARTITIONERS"]
