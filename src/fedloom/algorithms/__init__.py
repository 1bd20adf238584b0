"""Algorithms, one file each, registered by name. See base.py for the two-halves contract.

Every module in this package is imported on first use, so adding an algorithm is adding one file.
"""

import importlib
import pkgutil

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult,
                                     ServerState)

_INFRASTRUCTURE = {"base", "tree", "uploads"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALGORITHMS", "Algorithm", "Broadcast", "ClientResult", "ServerResult", "ServerState"]
