"""Every dataset test runs with a private cache, no FEDLOOM_DATA, no download switch and a fake HOME, so a real
dataset on the machine can never be picked up and nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDLOOM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDLOOM_DATA", raising=False)
    monkeypatch.delenv("FEDLOOM_DOWNLOAD", raising=False)
    return tmp_path
