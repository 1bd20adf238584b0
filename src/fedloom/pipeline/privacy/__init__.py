"""Differential privacy on the upload pipeline and the aggregation seam: client-level DP-FedAvg (central or
distributed noise, fixed-size or Poisson client sampling) and sample-level DP-SGD in local training, with
dp-accounting's RDP/PLD accountants. See
docs/privacy.md."""

from fedloom.pipeline.privacy import dp, sample  # noqa: F401  (register --transform dp, sample-dp)
