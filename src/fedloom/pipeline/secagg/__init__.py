"""Secure aggregation, simulated with real primitives (X25519 key agreement, AES-CTR masks, Shamir shares):
``--aggregator secagg``. See protocol.py and docs/privacy.md."""

from fedloom.pipeline.secagg import aggregator  # noqa: F401  (registers --aggregator secagg)
