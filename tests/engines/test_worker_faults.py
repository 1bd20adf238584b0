"""Faults of the processes engine's workers: frozen (SIGSTOP), killed, an interrupted or killed CLI, and the
temporary files multiprocessing leaves behind. The subprocess tests run the real CLI with TMPDIR pointing at
the test's own folder, so that every file multiprocessing makes there can be counted afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import torch

from fedloom import cli
from fedloom.engines import processes
from fedloom.engines.processes import exit_description, heartbeat_silence, sweep_stale_temp_dirs
from fedloom.engines.worker import heartbeat_loop

from processhelpers import children_of

RUN = ["run", "--dataset", "digits", "--clients", "6", "--engine", "processes", "--workers", "2", "--device", "cpu",
       "--quiet", "--threads", "1"]
FOREVER = "100000"  # rounds: a run that is still going whenever the test acts on it


# ------------------------------------------------------------------------------------------------ helpers
class Runs:
    """Starts CLI runs in subprocesses; at teardown SIGKILLs whatever they left (also a stopped worker)."""

    def __init__(self) -> None:
        # short: multiprocessing's socket paths in it must fit in an AF_UNIX address
        self.tmp = Path(tempfile.mkdtemp(prefix="fl-", dir="/tmp"))
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(self.tmp)}
        self.pids: list[int] = []

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "fedloom.cli", *RUN, *args], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pids.append(proc.pid)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fedloom.cli", *RUN, *args], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def workers(self, proc: subprocess.Popen, count: int = 2, timeout: float = 120) -> list[int]:
        """The worker pids of a run, once all of them exist (the resource tracker is left out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            # forked workers carry the CLI's own command line; spawned ones spawn_main's. Not the resource tracker
            found = [pid for pid in children_of(proc.pid) if b"resource_tracker" not in cmdline(pid)]
            if len(found) == count:
                self.pids += found
                return sorted(found)
            time.sleep(0.02)
        raise AssertionError(f"the run did not start {count} workers (exit status {proc.poll()})")

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.tmp.iterdir() if p.name.startswith(("pymp-", "fedloom-mp-")))

    def cleanup(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def runs() -> Iterator[Runs]:
    manager = Runs()
    yield manager
    manager.cleanup()


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def wait_for_round(out: Path, round_: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until metrics.jsonl holds round ``round_`` (the workers are then in the middle of the run)."""
    deadline = time.monotonic() + timeout
    path = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(path.read_text().splitlines()) > round_:
                return
        except OSError:
            pass
        time.sleep(0.005)
    err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    raise AssertionError(f"round {round_} never came (exit status {proc.poll()}) {err}")


def finished(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    """Exit status, stderr and seconds taken, failing the test if it takes longer than ``timeout``."""
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the CLI did not exit within {timeout} s") from None
    return proc.returncode, err, time.monotonic() - started


def assert_failed_cleanly(out: Path, runs: Runs, cli: int, workers: Sequence[int]) -> None:
    assert (out / "FAILED").is_file()
    assert not (out / "summary.json").exists()
    assert wait_gone(workers, 5) == [], "a worker outlived its run"
    assert children_of(cli) == []
    assert runs.leftovers() == []


# ------------------------------------------------------------------------------------------------ subprocess runs
def test_a_stopped_worker_ends_the_run_with_one_line(tmp_path: Path, runs: Runs) -> None:
    out = tmp_path / "run"
    proc = runs.start("--rounds", FOREVER, "--worker-timeout", "3", "--out", str(out))
    workers = runs.workers(proc)
    wait_for_round(out, 2, proc)
    os.kill(workers[1], signal.SIGSTOP)
    code, err, seconds = finished(proc, timeout=3 + 15)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fedloom: error: worker 1 (pid {workers[1]}) stopped answering: no heartbeat for ")
    assert "(frozen or stopped?)" in err and f"fedloom run --resume {out}" in err
    assert_failed_cleanly(out, runs, proc.pid, workers)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_killed_worker_ends_the_run_with_one_line(tmp_path: Path, runs: Runs, start: str) -> None:
    out = tmp_path / "run"
    proc = runs.start("--rounds", FOREVER, "--out", str(out), "--processes.start", start)
    workers = runs.workers(proc)
    wait_for_round(out, 2, proc)
    os.kill(workers[0], signal.SIGKILL)
    code, err, _ = finished(proc, timeout=15)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fedloom: error: worker 0 (pid {workers[0]}) died unexpectedly (killed by signal 9, "
                          f"SIGKILL")
    assert_failed_cleanly(out, runs, proc.pid, workers)


def test_ctrl_c_ends_the_run_within_seconds_even_with_a_stopped_worker(tmp_path: Path, runs: Runs) -> None:
    out = tmp_path / "run"
    proc = runs.start("--rounds", FOREVER, "--out", str(out))  # default timeout: the freeze goes unnoticed
    workers = runs.workers(proc)
    wait_for_round(out, 2, proc)
    os.kill(workers[0], signal.SIGSTOP)
    time.sleep(0.5)  # the main process is now waiting for the stopped worker
    proc.send_signal(signal.SIGINT)
    code, err, seconds = finished(proc, timeout=10)
    assert code != 0 and "interrupted" in err
    assert_failed_cleanly(out, runs, proc.pid, workers)


@pytest.mark.slow  # the same path as Ctrl-C, once the CLI has turned SIGTERM into an exception
@pytest.mark.skipif(not hasattr(cli, "termination_handlers"), reason="the CLI does not handle SIGTERM")
def test_sigterm_ends_the_run_like_ctrl_c_even_with_a_stopped_worker(tmp_path: Path, runs: Runs) -> None:
    out = tmp_path / "run"
    proc = runs.start("--rounds", FOREVER, "--out", str(out))
    workers = runs.workers(proc)
    wait_for_round(out, 2, proc)
    os.kill(workers[1], signal.SIGSTOP)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finished(proc, timeout=10)
    assert code == 128 + signal.SIGTERM and "interrupted" in err
    assert_failed_cleanly(out, runs, proc.pid, workers)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_of_a_killed_cli_exit_by_themselves(tmp_path: Path, runs: Runs, start: str) -> None:
    out = tmp_path / "run"
    proc = runs.start("--rounds", FOREVER, "--out", str(out), "--processes.start", start)
    workers = runs.workers(proc)
    others = [pid for pid in children_of(proc.pid) if pid not in workers]  # multiprocessing's resource tracker
    wait_for_round(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_gone(workers + others, 5) == [], "orphaned workers kept running"
    # nothing ran in the killed CLI to remove its temporary folder: the next start sweeps it (its owner is dead)
    assert [name.startswith(f"fedloom-mp-{proc.pid}-") for name in runs.leftovers()] == [True]
    sweep_stale_temp_dirs(str(runs.tmp))
    assert runs.leftovers() == []


@pytest.mark.slow
def test_a_run_stopped_by_a_frozen_worker_resumes_to_identical_metrics(tmp_path: Path, runs: Runs) -> None:
    args = ["--rounds", "40", "--checkpoint-every", "1"]
    reference = runs.run(*args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    proc = runs.start(*args, "--worker-timeout", "3", "--out", str(out))
    workers = runs.workers(proc)
    wait_for_round(out, 3, proc)
    os.kill(workers[0], signal.SIGSTOP)
    code, err, _ = finished(proc, timeout=3 + 15)
    assert code == 2 and "stopped answering" in err and "resumed from its last checkpoint" in err, err
    assert_failed_cleanly(out, runs, proc.pid, workers)
    resumed = subprocess.run([sys.executable, "-m", "fedloom.cli", "run", "--resume", str(out), "--quiet"],
                             env=runs.env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "metrics.jsonl").read_bytes() == (tmp_path / "reference" / "metrics.jsonl").read_bytes()
    assert runs.leftovers() == []


# ------------------------------------------------------------------------------------------------ units
def test_heartbeat_silence_tells_slow_from_frozen() -> None:
    assert heartbeat_silence(last_beat=100.0, started=0.0, now=129.0, timeout=30) is None
    assert heartbeat_silence(last_beat=100.0, started=0.0, now=131.0, timeout=30) == pytest.approx(31.0)
    # not beating yet: a worker still starting (imports, data) gets at least STARTUP_SECONDS
    assert heartbeat_silence(last_beat=0.0, started=100.0, now=150.0, timeout=3, startup=60) is None
    assert heartbeat_silence(last_beat=0.0, started=100.0, now=161.0, timeout=3, startup=60) == pytest.approx(61)
    assert heartbeat_silence(last_beat=0.0, started=100.0, now=161.0, timeout=90, startup=60) is None


def test_a_busy_worker_keeps_beating() -> None:
    beat, stop = _Beat(), threading.Event()
    thread = threading.Thread(target=heartbeat_loop, args=(beat, os.getppid(), 0.05, stop), daemon=True)
    thread.start()
    try:
        a = torch.randn(200, 200)
        busy_until, oldest = time.monotonic() + 1.0, 0.0
        while time.monotonic() < busy_until:  # a "long training step" in this thread
            a = torch.tanh(a @ a)
            if beat.value:
                oldest = max(oldest, time.monotonic() - beat.value)
        assert beat.value and oldest < 0.5
    finally:
        stop.set()
        thread.join(2)


def test_a_worker_whose_parent_is_gone_leaves() -> None:
    beat, orphaned = _Beat(), []
    heartbeat_loop(beat, parent=os.getppid() + 1, interval=0.01, on_orphan=lambda: orphaned.append(True))
    assert orphaned == [True] and beat.value == 0.0  # it left before beating for a parent that is not its own


def test_exit_descriptions_name_the_signal() -> None:
    assert exit_description(-9) == "killed by signal 9, SIGKILL"
    assert exit_description(1) == "exit code 1"


def test_stale_temp_folders_are_swept_only_when_their_owner_is_dead(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"fedloom-mp-{dead.pid}-abc"
    live = tmp_path / f"fedloom-mp-{os.getpid()}-def"
    other = tmp_path / "pymp-xyz"
    for folder in (stale, live, other):
        (folder / "inside").mkdir(parents=True)
    assert sweep_stale_temp_dirs(str(tmp_path)) == [stale.name]
    assert not stale.exists() and live.exists() and other.exists()


def test_the_temp_folder_is_shared_then_removed_with_the_last_engine(runs: Runs,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocessing import process as mp_process

    tmp_path = runs.tmp  # short enough for sockets
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / "fedloom-mp-999999999-old"  # no such pid
    stale.mkdir()
    before = mp_process.current_process()._config.get("tempdir")
    shared = processes._SharedTempDir()
    first = shared.acquire()
    assert not stale.exists(), "a start sweeps the folders of dead owners"
    assert shared.acquire() == first == mp_process.current_process()._config["tempdir"]
    assert Path(first).parent == tmp_path and Path(first).name.startswith(f"fedloom-mp-{os.getpid()}-")
    shared.release()
    assert Path(first).is_dir()  # one engine still uses it
    shared.release()
    assert not Path(first).exists()
    assert mp_process.current_process()._config.get("tempdir") == before


def test_a_temp_folder_too_long_for_sockets_falls_back_to_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    assert processes.temp_root() == "/tmp"
    monkeypatch.setattr(tempfile, "tempdir", "/var/folders/" + "x" * 80 + "/T")
    assert processes.temp_root() == "/tmp"


class _Beat:
    """Stands for the shared double (multiprocessing RawValue) in tests that stay in one process."""

    value = 0.0
