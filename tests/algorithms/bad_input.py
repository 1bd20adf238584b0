"""The one bad-input check of the algorithm tests: a one-round digits run with a bad option ends in exactly one
`fedloom: error: ...` line and exit status 2, before training writes a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.cli import main

FAST = ["run", "--quiet", "--rounds", "1", "--dataset", "digits", "--device", "cpu", "--clients", "4"]


def ids(bad: list[tuple[list[str], str]]) -> list[str]:
    """Test ids: the option each expected message starts with."""
    return [expected.split(" ")[0] for _, expected in bad]


def assert_one_clear_error(args: list[str], expected: str, out: Path, capsys: pytest.CaptureFixture,
                           *, no_folder: bool = False) -> None:
    """no_folder: not even the run folder may exist (else: no summary.json in it)."""
    code = main([*FAST, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fedloom: error: "), err
    assert expected in err[0], err
    assert not (out.exists() if no_folder else (out / "summary.json").exists())
