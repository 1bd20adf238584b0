"""fedloom algorithms as a Flower app: ``server_app(config)`` and ``client_app(config)`` (optional extra
``fedloom[flower]``; this package is imported only when used). See docs/deploy.md.

Beutel et al., "Flower: A Friendly Federated Learning Research Framework" (2020).
"""

from __future__ import annotations

from typing import Any

from fedloom.extras import require


def server_app(config: Any, base: Any = None) -> Any:
    """A Flower ServerApp running the fedloom config ``config`` (see fedloom.flower.server)."""
    require("flwr", "flower", "fedloom.flower")
    from fedloom.flower.server import server_app as make

    return make(config, base)


def client_app(config: Any, base: Any = None) -> Any:
    """A Flower ClientApp holding the clients of the node it runs on (see fedloom.flower.node)."""
    require("flwr", "flower", "fedloom.flower")
    from fedloom.flower.node import client_app as make

    return make(config, base)


__all__ = ["server_app", "client_app"]
