"""Shared test setup: one torch thread, a private partition cache, and small real experiments on digits."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLOOM_CACHE", str(tmp_path_factory.getbasetemp() / "fedloom-cache"))


FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
has_fmnist = os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz"))
