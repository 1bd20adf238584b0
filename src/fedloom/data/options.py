"""Turning a dataset name and an options dict (from a config file or the CLI) into a DatasetSpec instance."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from fedloom.data.base import DATASETS, DatasetSpec
from fedloom.errors import ConfigError

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def dataset_class(name: str) -> type:
    """The registered DatasetSpec class for ``name`` (registers the built-in loaders on first use)."""
    import fedloom.data.datasets  # noqa: F401  (registration side effect)

    return DATASETS.get(name)


def dataset_option_names(name: str) -> list[str]:
    """Names of the options a dataset accepts."""
    return [f.name for f in dataclasses.fields(dataset_class(name))]


def make_dataset_spec(name: str, options: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Instantiate dataset ``name`` with ``options``; unknown options or bad values raise ConfigError."""
    cls = dataset_class(name)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        field = key.replace("-", "_")
        if field not in valid:
            choices = ", ".join(valid) if valid else "none (this dataset takes no options)"
            raise ConfigError(f"unknown option '{key}' for dataset '{cls.registry_name}'. Valid options: {choices}")
        kwargs[field] = coerce(value, hints[field], f"{cls.registry_name}.{field}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type (bool, int, float, str, or Optional of those)."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", ""}):
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        return _coerce_scalar(value, hint)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"option {where}: expected {name}, got {value!r}") from None


def _coerce_scalar(value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(value)
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if hint is str:
        return str(value)
    return value
