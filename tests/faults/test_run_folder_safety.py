"""Nothing lost: ``--overwrite`` only ever replaces fedloom's own run folders, atomically; client-state stores
belong to one run; one writer per folder; bad paths are one line (exit 2) before training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchhelpers import cli
from fedloom.checkpoint import CHECKPOINT_NAME
from fedloom.locking import RunLock

QUICK = ["run", "--dataset", "digits", "--model", "mlp", "--clients", "6", "--rounds", "2", "--lr", "0.02",
         "--device", "cpu", "--quiet", "--threads", "1"]
DITTO = [*QUICK, "--algorithm", "ditto", "--store", "disk"]


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fedloom: error:"), err
    assert needle in lines[0] and "Traceback" not in err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


# ------------------------------------------------------------------------------------------------ D1
def test_overwrite_refuses_a_folder_of_user_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    user = tmp_path / "x"
    (user / "chapters").mkdir(parents=True)
    (user / "thesis.tex").write_text("precious")
    (user / "chapters" / "one.tex").write_text("also precious")
    code, _, err = cli([*QUICK, "--out", str(user), "--overwrite"], capsys)
    _one_line_error(code, err, "not a fedloom run folder")
    assert (user / "thesis.tex").read_text() == "precious" and (user / "chapters" / "one.tex").is_file()


@pytest.mark.parametrize("where", ["cwd", "parent", "home"])
def test_overwrite_refuses_the_current_directory_its_parents_and_home(where: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (inner / "keep.txt").write_text("mine")
    monkeypatch.chdir(inner)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    target = {"cwd": ".", "parent": "..", "home": str(tmp_path / "a")}[where]
    code, _, err = cli([*QUICK, "--out", target, "--overwrite"], capsys)
    _one_line_error(code, err, "--overwrite refused")
    assert (inner / "keep.txt").read_text() == "mine"


def test_overwrite_refuses_a_run_folder_holding_user_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run)], capsys)[0] == 0
    (run / "notes.md").write_text("my analysis")
    code, _, err = cli([*QUICK, "--out", str(run), "--overwrite"], capsys)
    _one_line_error(code, err, "notes.md")
    assert (run / "notes.md").is_file() and (run / "summary.json").is_file()


def test_overwrite_replaces_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run)], capsys)[0] == 0
    assert cli([*QUICK, "--out", str(run), "--overwrite", "--rounds", "3"], capsys)[0] == 0
    assert json.loads((run / "summary.json").read_text())["rounds"] == 3
    assert not list(tmp_path.glob(".run.previous-*"))


def test_a_failed_start_gives_the_replaced_run_back_untouched(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run)], capsys)[0] == 0
    before = _snapshot(run)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fedloom.run.write_partition_report", broken)
    with pytest.raises(OSError):
        from fedloom.cli import main
        main([*QUICK, "--out", str(run), "--overwrite", "--rounds", "3"])
    assert _snapshot(run) == before
    assert not list(tmp_path.glob(".run.previous-*"))


def test_a_run_killed_during_its_start_gets_its_predecessor_back(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run)], capsys)[0] == 0
    before = _snapshot(run)
    aside = tmp_path / ".run.previous-999999999"  # what `--overwrite` leaves when killed before round 0
    os.replace(run, aside)
    run.mkdir()
    (run / ".fedloom-run").write_text("fedloom run folder\n")
    (run / "config.toml").write_text("rounds = 3\n")
    code, _, err = cli([*QUICK, "--out", str(run)], capsys)  # any next start on that folder
    assert "restored" in err and code == 2 and "already holds a completed run" in err
    assert _snapshot(run) == before and not aside.exists()


# ------------------------------------------------------------------------------------------------ D2, D3
def test_runs_sharing_a_store_dir_never_read_each_others_states(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "S"
    for name in ("A", "B"):
        assert cli([*DITTO, "--store-dir", str(store), "--rounds", "3", "--out", str(tmp_path / name)], capsys)[0] == 0
    first = [(tmp_path / n / "metrics.jsonl").read_text().splitlines()[0] for n in ("A", "B")]
    assert first[0] == first[1]  # B's round 0 is the initial model, not A's trained personal models
    assert (tmp_path / "A" / "metrics.jsonl").read_bytes() == (tmp_path / "B" / "metrics.jsonl").read_bytes()
    assert not any(store.iterdir())  # each run's states are removed when it completes


def test_store_dir_states_are_keyed_by_run_and_kept_on_request(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "S"
    for name in ("A", "B"):
        assert cli([*DITTO, "--store-dir", str(store), "--keep-client-states", "--out", str(tmp_path / name)],
                   capsys)[0] == 0
    keyed = sorted(p.name for p in store.iterdir())
    assert len(keyed) == 2 and keyed[0].startswith("A-") and keyed[1].startswith("B-")


def test_overwrite_of_a_disk_store_run_starts_clean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, fresh = tmp_path / "o", tmp_path / "fresh"
    assert cli([*DITTO, "--rounds", "3", "--out", str(run), "--keep-client-states"], capsys)[0] == 0
    assert (run / "client_states").is_dir()
    assert cli([*DITTO, "--rounds", "3", "--out", str(run), "--overwrite"], capsys)[0] == 0
    assert cli([*DITTO, "--rounds", "3", "--out", str(fresh)], capsys)[0] == 0
    assert (run / "metrics.jsonl").read_bytes() == (fresh / "metrics.jsonl").read_bytes()
    assert not (run / "client_states").exists()  # D10: removed once the run is complete


# ------------------------------------------------------------------------------------------------ locks
def test_a_folder_being_written_is_refused_to_a_second_writer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run), "--checkpoint-every", "1"], capsys)[0] == 0
    (run / "summary.json").unlink()
    lock = RunLock(run).acquire()
    try:
        code, _, err = cli(["run", "--resume", str(run), "--quiet"], capsys)
        _one_line_error(code, err, f"being written by pid {os.getpid()}")
        code, _, err = cli([*QUICK, "--out", str(run), "--overwrite"], capsys)
        _one_line_error(code, err, "being written by")
    finally:
        lock.release()
    assert cli(["run", "--resume", str(run), "--quiet"], capsys)[0] == 0


# ------------------------------------------------------------------------------------------------ D6 paths
def test_path_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(["--out", str(afile)], "not a folder"),
             (["--out", "/proc/fedloom-x"], "cannot create run folder"),
             (["--out", str(afile / "sub")], "cannot create run folder"),
             (["--algorithm", "ditto", "--store", "disk", "--store-dir", str(afile), "--out", str(tmp_path / "s")],
              "--store-dir"),
             (["--store", "disk", "--store-dir", "/proc/fedloom-s", "--out", str(tmp_path / "p")], "--store-dir")]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        cases.append((["--out", str(locked / "run")], "cannot create run folder"))
    for extra, needle in cases:
        code, _, err = cli([*QUICK, *extra], capsys)
        _one_line_error(code, err, needle)
    assert not list(tmp_path.rglob("summary.json"))


def test_a_checkpoint_path_that_is_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run)], capsys)[0] == 0
    (run / "summary.json").unlink()
    (run / CHECKPOINT_NAME).mkdir()
    code, _, err = cli(["run", "--resume", str(run), "--quiet"], capsys)
    _one_line_error(code, err, "is not a checkpoint file")


# ------------------------------------------------------------------------------------------------ D10
def test_stale_temporaries_of_a_killed_writer_are_swept_at_resume(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli([*QUICK, "--out", str(run), "--checkpoint-every", "1"], capsys)[0] == 0
    (run / "summary.json").unlink()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run / ".metrics.jsonl.xyz.tmp").write_text("half")
    assert cli(["run", "--resume", str(run), "--quiet"], capsys)[0] == 0
    assert not list(run.glob(".*.tmp"))
