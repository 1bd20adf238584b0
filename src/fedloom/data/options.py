"""Turning a dataset name and an options dict (from a config file or the CLI) into a DatasetSpec instance."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from fedloom.data.base import DATASETS, DatasetSpec
from fedloom.config import make_component


def dataset_class(name: str) -> type:
    """The registered DatasetSpec class for ``name`` (registers the built-in loaders on first use)."""
    import fedloom.data.datasets  # noqa: F401  (registration side effect)

    return DATASETS.get(name)


def dataset_option_names(name: str) -> list[str]:
    """Names of the options a dataset accepts."""
    return [f.name for f in dataclasses.fields(dataset_class(name))]


def make_dataset_spec(name: str, options: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Instantiate dataset ``name`` with ``options``; unknown options or bad values raise ConfigError."""
    dataset_class(name)  # registers the built-in loaders
    return make_component(DATASETS, name, dict(options or {}))
