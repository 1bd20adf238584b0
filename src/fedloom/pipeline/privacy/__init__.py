"""Differential privacy on the upload pipeline and the aggregation seam: client-level DP-FedAvg (central or
distributed noise, fixed-size or Poisson client sampling) with dp-accounting's RDP/PLD accountants. See
docs/privacy.md."""

from fedloom.pipeline.privacy import dp  # noqa: F401  (registers --transform dp)
