"""Datasets, partitioners and the federated view of a dataset (per-client train/test index arrays)."""
