"""What the server and the nodes of a fedloom Flower app share: the run config they both load, its fingerprint
(the version check between them), the message names, and how a node's error travels back.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data" (AISTATS 2017)
describe the round protocol the messages implement: broadcast → local update on each device → aggregation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Mapping, Union

from fedloom import __version__, errors
from fedloom.config import RunConfig, set_value
from fedloom.config_checks import to_toml
from fedloom.errors import ConfigError

#: Flower message types (``<category>.<action>``) the fedloom ClientApp answers.
HELLO, TRAIN, EVALUATE = "query.fedloom_hello", "train.fedloom", "evaluate.fedloom"
#: Flower run-config key naming the fedloom config file (relative to the app folder); the other keys of the
#: run config override the file's (``flwr run DIR --run-config "rounds=5"``), on server and nodes alike.
CONFIG_KEY = "fedloom-config"
#: Keys of the Flower run config that steer the Flower path itself, not the fedloom run.
FLOWER_KEYS = ("round-timeout", "connect-timeout", "on-lost", "out")
#: Fields that may differ between the server and a node (where files live, how each side computes).
LOCAL_FIELDS = ("out", "engine", "workers", "worker_engine", "worker_timeout", "quiet", "store", "store_dir",
                "store_dtype", "data_dir", "cache_dir", "threads", "device", "pack_size", "keep_client_states",
                "trackers")

ConfigSource = Union[str, Path, Mapping[str, Any], RunConfig]


def load_config(source: ConfigSource, run_config: Mapping[str, Any] | None = None,
                base: Path | None = None) -> RunConfig:
    """The resolved RunConfig of ``source`` (a TOML path, a dict or a RunConfig) with the Flower run config's
    overrides: the same on the server and on every node, which the fingerprint checks."""
    from fedloom.api import _raw
    from fedloom.config import build_config
    from fedloom.run import resolve_config

    run_config = dict(run_config or {})
    path = run_config.pop(CONFIG_KEY, None)
    if path is not None:
        source = Path(str(path)) if base is None or Path(str(path)).is_absolute() else base / str(path)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise ConfigError(f"fedloom config file {source} not found")
    raw = _raw(source)
    for key, value in run_config.items():
        if key not in FLOWER_KEYS:
            set_value(raw, key, value)
    return resolve_config(build_config(raw))


def fingerprint(cfg: RunConfig) -> str:
    """What the server and a node must agree on: the config without the fields each side sets for itself, and
    the fedloom version."""
    shared = dataclasses.replace(cfg, **{f: getattr(RunConfig(), f) for f in LOCAL_FIELDS if hasattr(cfg, f)})
    text = f"fedloom {__version__}\n{to_toml(shared)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shared_toml(cfg: RunConfig) -> str:
    shared = dataclasses.replace(cfg, **{f: getattr(RunConfig(), f) for f in LOCAL_FIELDS if hasattr(cfg, f)})
    return to_toml(shared)


def config_difference(mine: str, theirs: str) -> str:
    """The first lines that differ between two configs' TOML (for the mismatch message)."""
    a, b = set(mine.splitlines()), set(theirs.splitlines())
    only_mine = sorted(a - b)[:3]
    only_theirs = sorted(b - a)[:3]
    return f"this node has {only_mine or '[]'}, the server has {only_theirs or '[]'}"


def error_info(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def raise_node_error(info: Mapping[str, str], node: int) -> None:
    """A node's error on the server: fedloom errors keep their type and one-line message."""
    cls = getattr(errors, info["type"], None)
    if isinstance(cls, type) and issubclass(cls, errors.FedloomError):
        raise cls(f"node {node}: {info['message']}")
    raise errors.TrainingError(f"node {node} failed: {info['type']}: {info['message']}")
