"""Algorithms, one file each, registered by name. See base.py for the two-halves contract."""

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult,
                                     ServerState)
from fedloom.algorithms import fedavg, fedavg_ft, fedprox, local  # noqa: F401  (registration)

__all__ = ["ALGORITHMS", "Algorithm", "Broadcast", "ClientResult", "ServerResult", "ServerState"]
