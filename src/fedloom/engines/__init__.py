"""Engines: how the two halves of an algorithm are executed (serial, vectorized, processes, ray).

Floors: ``build`` makes a Runtime and an engine from a resolved RunConfig (used by run.py and by every worker;
no engine module imports fedloom.run); ``sharded`` is the sharding logic of multi-worker engines over a
``Transport``, ``transport_mp`` the multiprocessing transport; ``options`` maps the engines' namespaced options
(``--processes.workers``) onto the RunConfig fields that store them.
"""

from fedloom.engines.base import ENGINE_OPTIONS, ENGINES, CohortResult, Engine, EngineOptions
from fedloom.engines import processes, serial, vectorized  # noqa: F401  (registration)
from fedloom.engines import ray_engine  # noqa: F401  (registration; Ray itself is imported on use)

__all__ = ["ENGINES", "ENGINE_OPTIONS", "CohortResult", "Engine", "EngineOptions"]
