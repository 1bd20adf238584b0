"""Engines: how the two halves of an algorithm are executed (serial now; vectorized and processes later)."""

from fedloom.engines.base import ENGINES, CohortResult, Engine, EngineOptions
from fedloom.engines import processes, serial, vectorized  # noqa: F401  (registration)

__all__ = ["ENGINES", "CohortResult", "Engine", "EngineOptions"]
