"""Shared fixtures: every test gets its own FEDLOOM_CACHE / FEDLOOM_DATA-free environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEDLOOM_CACHE", str(cache))
    monkeypatch.delenv("FEDLOOM_DATA", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return cache


@pytest.fixture(scope="session")
def digit_labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().target, dtype=np.int64)
