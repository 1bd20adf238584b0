"""Reading LEAF json files and choosing users (Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018).

LEAF's preprocessing writes ``data/all_data/*.json`` (and, after its split step, ``data/train/*.json`` and
``data/test/*.json``); each file is ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...],
"y": [...]}}}``. fedloom pools train and test (it re-splits per client). Users are the natural client ids.

Choosing users: ``users`` = None takes as many users as the run has clients (so the natural partition fits
``--clients``), 0 takes every user; the choice is uniform among users with at least ``min_user_samples``
samples, drawn from the data seed, and ``max_user_samples`` keeps a random subset of a larger user's samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fedloom.errors import ConfigError, DataError
from fedloom.seeding import numpy_generator

UserData = dict[str, tuple[list[Any], list[Any]]]


def leaf_json_files(directory: Path) -> Optional[list[Path]]:
    """The json files of a LEAF data folder: all_data/*.json, else train/*.json + test/*.json."""
    files = sorted((directory / "all_data").glob("*.json"))
    if not files:
        files = sorted((directory / "train").glob("*.json")) + sorted((directory / "test").glob("*.json"))
    return files or None


def leaf_dirs(name: str) -> tuple[str, ...]:
    """Sub-paths of a data root where a LEAF dataset may live (LEAF's own layout is leaf/data/<name>/data)."""
    return (f"{name}/data", name, f"leaf/data/{name}/data", f"leaf/{name}/data", "")


def read_leaf(files: list[Path]) -> UserData:
    """Every user's x and y lists, merged over files (a user split over train/test files gets both)."""
    users: UserData = {}
    for path in files:
        blob = _load_json(path)
        for user in blob["users"]:
            entry = blob["user_data"].get(user)
            if not isinstance(entry, dict) or len(entry.get("x", [])) != len(entry.get("y", [])):
                raise DataError(f"{path}: user {user!r} has no user_data or x and y of different lengths")
            xs, ys = users.setdefault(str(user), ([], []))
            xs.extend(entry["x"])
            ys.extend(entry["y"])
    if not users:
        raise DataError(f"no users in the LEAF files {[str(f) for f in files]}")
    return users


def _load_json(path: Path) -> dict[str, Any]:
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read LEAF file {path}: {exc}") from exc
    if not isinstance(blob, dict) or not isinstance(blob.get("users"), list) or not isinstance(
            blob.get("user_data"), dict):
        raise DataError(f"{path} is not a LEAF json file (needs 'users' and 'user_data')")
    return blob


def choose_users(sizes: dict[str, int], wanted: Optional[int], num_clients: int, min_samples: int,
                 seed: int, what: str = "users") -> list[str]:
    """Sorted names of the chosen users (see the module docstring)."""
    k = num_clients if wanted is None else wanted
    if k < 0:
        raise ConfigError(f"the number of {what} must be >= 0 (0 = all), got {k}")
    eligible = sorted(u for u, n in sizes.items() if n >= min_samples)
    if k == 0:
        k = len(eligible)
    if k == 0 or k > len(eligible):
        raise DataError(f"{len(eligible)} of {len(sizes)} {what} have at least {min_samples} samples, but {k} "
                        f"are needed; lower --clients (or set the dataset's users option) or min_user_samples")
    rng = numpy_generator(seed, -1, -1, f"choose-{what}")
    return sorted(eligible[i] for i in rng.choice(len(eligible), size=k, replace=False))


def cap_samples(n: int, cap: Optional[int], seed: int, user_index: int) -> np.ndarray:
    """Indices of the samples of a user with n samples that are kept: all, or a sorted random subset of cap."""
    if cap is None or n <= cap:
        return np.arange(n)
    rng = numpy_generator(seed, -1, user_index, "cap-user-samples")
    return np.sort(rng.choice(n, size=cap, replace=False))


def natural_ids(counts: Sequence[int]) -> np.ndarray:
    """Per-sample user index 0..U-1 for users with these sample counts (in order)."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))
