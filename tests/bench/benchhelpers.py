"""Shared bits of the bench tests: a small digits config and a one-line CLI runner."""

from __future__ import annotations

import pytest

from fedloom.cli import main

# ~0.25 s per round on one core: slow enough to SIGKILL mid-run, fast enough for the suite
RESUME_ARGS = ["--dataset", "digits", "--model", "mlp", "--clients", "6", "--rounds", "10", "--lr", "0.02",
               "--batch-size", "4", "--device", "cpu", "--quiet", "--threads", "1"]


def cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err
