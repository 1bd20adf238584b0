"""fedloom: a federated learning research toolkit.

Algorithms are two pure halves over explicit state (a client update and a server step); engines decide
how to run them. See docs/architecture.md; the Python API (``fedloom.run``, ``fedloom.partition``,
``fedloom.load_runs``) is in docs/python.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"partition", "load_runs", "make_config", "RunResult", "Partition", "StopRun"}
__all__ = ["run", *sorted(_API), "__version__"]


def __getattr__(name: str) -> Any:
    """The API, imported on first use so that ``import fedloom`` stays cheap (no torch). ``fedloom.run`` is the
    module fedloom/run.py, which is callable (``fedloom.run(rounds=5)`` calls fedloom.api.run)."""
    if name == "run":
        import importlib

        return importlib.import_module("fedloom.run")
    if name in _API:
        from fedloom import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedloom' has no attribute {name!r}")
