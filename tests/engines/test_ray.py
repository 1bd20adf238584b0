"""The Ray engine (fedloom.engines.ray_engine) against the serial engine, on one local Ray cluster for the
module: byte-identical metrics.jsonl for 1, 2 and 3 workers, a worker killed mid-round, a driver crash resumed
from its checkpoint, and bad input. Skipped when Ray is not installed."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from fedloom.api import run  # noqa: E402
from fedloom.cli import main  # noqa: E402
from fedloom.engines import ray_engine  # noqa: E402
from fedloom.engines.ray_transport import check_reachable, import_ray  # noqa: E402
from fedloom.errors import ConfigError  # noqa: E402
from fedloom.run import run_experiment  # noqa: E402

from helpers import small_config  # noqa: E402

SMALL = dict(dataset="digits", model="mlp", clients=7, join_ratio=0.75, rounds=3, partition="dirichlet", alpha=0.5,
             batch_size=16, lr=0.05, seed=3, device="cpu", threads=1, quiet=True)


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One local cluster for the module (engines join it and leave it up); every Ray process gone after."""
    for attempt in range(3):  # Ray gives its raylet 30 s to start, short on a loaded machine
        try:
            ray.init(num_cpus=3, include_dashboard=False, logging_level="warning", configure_logging=False)
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
    node = ray._private.worker._global_node  # noqa: SLF001  (the processes this test started)
    pids = [p.process.pid for procs in node.all_processes.values() for p in procs]
    yield
    ray.shutdown()
    deadline = time.monotonic() + 15  # shutdown signals them; give them a moment to exit
    while [pid for pid in pids if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [(pid, _name(pid)) for pid in pids if _alive(pid)]
    assert not left, f"Ray processes left running: {left}"


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80]
    except OSError:
        return "?"


def metrics(out: Path) -> bytes:
    return (out / "metrics.jsonl").read_bytes()


def run_to(out: Path, **overrides: Any) -> Path:
    run(**{**SMALL, **overrides}, out=out)
    return out


@pytest.fixture(scope="module")
def serial_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serial")
    return {algo: run_to(root / algo, algorithm=algo) for algo in ("fedavg", "ditto")}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ray_metrics_are_byte_identical_to_serial(cluster: Any, serial_runs: dict, tmp_path: Path,
                                                  workers: int) -> None:
    out = run_to(tmp_path / "ray", algorithm="fedavg", engine="ray", workers=workers)
    assert metrics(out) == metrics(serial_runs["fedavg"])
    rows = (out / "timings.jsonl").read_text().splitlines()
    assert len(rows) == SMALL["rounds"] and all('"idle_fraction"' in row for row in rows)
    assert f'"ray_workers": {workers}' in rows[-1]


@pytest.mark.slow
def test_tree_reduction_merges_partial_sums_and_matches_serial_to_rounding(cluster: Any, serial_runs: dict,
                                                                          tmp_path: Path) -> None:
    """--ray.reduce tree: one float64 partial sum per worker (Parrot's), equal to serial but for the order of
    the float64 additions."""
    result = run(**{**SMALL, "algorithm": "fedavg", "engine": "ray", "workers": 2, "ray_reduce": "tree"},
                 out=tmp_path / "ray")
    reference = [json.loads(line) for line in metrics(serial_runs["fedavg"]).decode().splitlines()]
    for ours, theirs in zip(result.records, reference, strict=True):
        assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-6)
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


@pytest.mark.slow
def test_client_states_stay_on_their_worker_and_match_serial(cluster: Any, serial_runs: dict,
                                                             tmp_path: Path) -> None:
    """Ditto keeps a personal model per client: clients are pinned where their state lives."""
    out = run_to(tmp_path / "ray", algorithm="ditto", engine="ray", workers=2)
    assert metrics(out) == metrics(serial_runs["ditto"])


def _kill_worker_1(method: str, call: int, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """SIGKILL worker 1's process on the ``call``-th call of ``RayEngine.<method>`` (then run it); the engines
    seen come back (for their recoveries)."""
    engines: list[Any] = []
    original = getattr(ray_engine.RayEngine, method)

    def kill_then_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        engines.append(self)
        if len(engines) == call and 1 in self.alive:
            os.kill(self.transport.info[1]["pid"], signal.SIGKILL)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ray_engine.RayEngine, method, kill_then_call)
    return engines


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,store,when", [("fedavg", "memory", "_gather"), ("ditto", "memory", "_gather"),
                                                  ("ditto", "disk", "_fold")])
def test_a_worker_killed_mid_round_gives_the_clean_round(cluster: Any, serial_runs: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, algorithm: str,
                                                         store: str, when: str) -> None:
    """Worker 1 SIGKILLed while round 2 trains (``_gather``) or after it trained, before the sum (``_fold``):
    its clients run again on worker 0. Ditto's personal models of its clients come from the driver's copy
    (memory store) or from the disk store's files, which worker 0 reads (one machine), at their start-of-round
    versions: with ``_fold`` the lost worker had already written its round-2 states, which were only staged."""
    engines = _kill_worker_1(when, 2, monkeypatch)
    out = run_to(tmp_path / "ray", algorithm=algorithm, engine="ray", workers=2, store=store)
    assert metrics(out) == metrics(serial_runs[algorithm])
    recoveries = engines[0].recoveries
    assert recoveries and recoveries[0]["lost"] == [1] and recoveries[0]["rerun"], recoveries
    assert engines[0].alive == [0]
    if algorithm == "ditto":  # the lost worker held saved states that found a new home
        assert recoveries[0]["rehomed"] and engines[0].backup == (store == "memory")


@pytest.mark.slow
def test_a_worker_lost_before_its_commit_is_trained_again(cluster: Any, serial_runs: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 1 dies after round 2's sum is complete but before its new Ditto states were committed: its
    clients of round 2 train again on worker 0 from the driver's copy of their round-1 states."""
    engines = _kill_worker_1("_commit", 2, monkeypatch)
    out = run_to(tmp_path / "ray", algorithm="ditto", engine="ray", workers=2)
    assert metrics(out) == metrics(serial_runs["ditto"])
    recoveries = engines[0].recoveries
    assert recoveries and recoveries[0]["round"] == 2 and recoveries[0]["rerun"], recoveries


@pytest.mark.slow
def test_a_driver_crash_resumes_from_the_checkpoint(cluster: Any, serial_runs: dict, tmp_path: Path) -> None:
    cfg = small_config(**{**SMALL, "algorithm": "ditto", "engine": "ray", "workers": 2, "checkpoint_every": 2,
                          "out": str(tmp_path / "ray")})

    def crash(round_: int, record: dict) -> None:
        if round_ == 3:
            raise KeyboardInterrupt  # the driver goes down after round 3, its checkpoint is at round 2

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, progress=crash)
    assert (tmp_path / "ray" / "checkpoint.pt").is_file()
    assert main(["run", "--resume", str(tmp_path / "ray"), "--quiet"]) == 0
    assert metrics(tmp_path / "ray") == metrics(serial_runs["ditto"])


# ------------------------------------------------------------------------------------------------ bad input
def test_a_divergence_keeps_its_type_and_can_be_recorded(cluster: Any, tmp_path: Path) -> None:
    """A worker's non-finite loss comes back as DivergenceError; recorded, the run then evaluates on the same
    workers (no stale reply of the failed round is taken for the evaluation's)."""
    from fedloom.errors import DivergenceError

    with pytest.raises(DivergenceError, match="non-finite"):
        run_to(tmp_path / "fails", algorithm="fedavg", engine="ray", workers=2, lr=1e12)
    out = run_to(tmp_path / "recorded", algorithm="fedavg", engine="ray", workers=2, lr=1e12,
                 on_divergence="record")
    serial = run_to(tmp_path / "serial", algorithm="fedavg", lr=1e12, on_divergence="record")
    assert json.loads((out / "summary.json").read_text())["diverged"]["round"] == 1
    assert metrics(out) == metrics(serial)


@pytest.mark.slow
def test_more_gpus_per_worker_than_the_cluster_has_is_one_error(cluster: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--dataset", "digits", "--clients", "4", "--rounds", "1", "--engine", "ray",
                 "--ray.gpus-per-worker", "2", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "--ray.gpus-per-worker 2" in err and "GPUs" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_an_unreachable_address_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--dataset", "digits", "--clients", "4", "--rounds", "1", "--engine", "ray",
                 "--ray.address", "127.0.0.1:1", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "cannot reach 127.0.0.1:1" in err and "ray start --head" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match="expected auto, host:port"):
        check_reachable("nowhere")


def test_ray_not_installed_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'fedloom\[ray\]'"):
        import_ray()


def test_ray_options_are_checked_by_their_dataclass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--dataset", "digits", "--engine", "ray", "--ray.gpus-per-worker", "-1",
                 "--out", str(tmp_path / "r"), "--quiet"])
    assert code != 0 and "gpus_per_worker must be >= 0" in capsys.readouterr().err


NICE_PROBE = """
import os
from fedloom.engines.ray_transport import connect, import_ray
ray = import_ray()
connect(None, 1, 0.0)
@ray.remote(num_cpus=1)
class Probe:
    def nice(self):
        return os.nice(0)
print("nice", os.nice(0), ray.get(Probe.remote().nice.remote()))
ray.shutdown()
"""


@pytest.mark.slow
def test_workers_of_a_local_cluster_run_at_the_drivers_priority() -> None:
    """Ray starts workers at nice 15 by default: beside any other work (another run, a benchmark's baseline) they
    got a fraction of the cores (an M1 round 1.86 s against 0.44 s). fedloom's local cluster keeps them at the
    driver's priority (a driver started with nice 3 here)."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(["nice", "-n", "3", sys.executable, "-c", NICE_PROBE], capture_output=True, text=True,
                         env=env, timeout=180)
    line = [row for row in out.stdout.splitlines() if row.startswith("nice ")]
    assert line, out.stderr[-2000:]
    driver, worker = map(int, line[0].split()[1:])
    assert worker == driver >= 3
