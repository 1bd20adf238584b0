"""A SuperLink and N SuperNodes as separate processes on loopback (insecure: for tests and measurements on one
machine; docs/deploy.md shows TLS and node authentication for real devices), and ``flwr run`` against them.

Every process is started in its own session (process group), so that ``close`` ends it together with what it
started (a SuperNode's SuperExec and ClientApp processes), and nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


class LocalDeployment:
    """``with LocalDeployment(folder, node_configs) as d: d.run(app)``. With ``simulation=N`` the SuperLink runs
    Flower's simulation runtime with N simulated SuperNodes instead (no SuperNode processes)."""

    def __init__(self, folder: Path, node_configs: list[dict[str, Any]], simulation: int = 0) -> None:
        self.folder = Path(folder)
        self.node_configs = [] if simulation else node_configs
        self.simulation = simulation
        self.port = free_port()
        # Flower's processes start their helpers (flower-superexec, flwr-clientapp) by name from PATH
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "FLWR_HOME": str(self.folder / "flwr-home"), "OMP_NUM_THREADS": "1", "PATH": path}
        self.superlink: Optional[subprocess.Popen] = None
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.folder / log, "wb")
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder,
                                start_new_session=True)

    def __enter__(self) -> "LocalDeployment":
        self.folder.mkdir(parents=True, exist_ok=True)
        home = self.folder / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                          f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
                                          + (f"options.num-supernodes = {self.simulation}\n"
                                             if self.simulation else ""))
        try:
            self.superlink = self._start([_bin("flower-superlink"), "--insecure", "--port", str(self.port),
                                          "--disable-runtime-dependency-installation"]
                                         + (["--simulation"] if self.simulation else []), "superlink.log")
            self._wait_listening(self.port, 120)
            for i, config in enumerate(self.node_configs):
                self.start_node(i, config)
        except BaseException:
            self.close()
            raise
        return self

    def start_node(self, index: int, config: dict[str, Any]) -> subprocess.Popen:
        node_config = " ".join(f"{k}={toml_value(v)}" for k, v in config.items())
        node = self._start([_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                            "--port", str(free_port()), "--node-config", node_config], f"supernode{index}.log")
        self.nodes.append(node)
        return node

    def _wait_listening(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.superlink is not None and self.superlink.poll() is not None:
                raise RuntimeError(f"flower-superlink exited: {(self.folder / 'superlink.log').read_text()[-2000:]}")
            time.sleep(0.5)
        raise RuntimeError(f"flower-superlink did not listen on {port} within {timeout:g} s")

    def run(self, app: Path, run_config: Optional[dict[str, Any]] = None, timeout: float = 1800) -> str:
        """``flwr run APP loopback --stream``; returns its output (raises when it fails)."""
        args = [_bin("flwr"), "run", str(app), "loopback", "--stream"]
        if run_config:
            args += ["--run-config", " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())]
        done = subprocess.run(args, env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        if done.returncode != 0 or "ServerApp raised an exception" in output:
            raise RuntimeError(f"flwr run failed ({done.returncode}):\n{output[-4000:]}")
        return output

    def kill_node(self, index: int) -> None:
        """A device lost without warning: SIGKILL to the SuperNode and every process it started."""
        node = self.nodes[index]
        family = _descendants(node.pid)
        _kill_group(node, signal.SIGKILL)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        node.wait(timeout=15)

    def close(self) -> None:
        """End every process this deployment started and everything they started (SuperExec, ServerApp and
        ClientApp processes detach into sessions of their own, so they are found through their parents)."""
        started = [p for p in [*self.nodes, self.superlink] if p is not None]
        self._started_pids = {pid for p in started for pid in [p.pid, *_descendants(p.pid)]}
        for process in started:
            _kill_group(process, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait(timeout=15)
        for pid in self._started_pids:  # what outlived its parent
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 20  # SIGKILL is delivered asynchronously
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def leftovers(self) -> list[int]:
        """Processes this deployment started that are still running (empty after close)."""
        return sorted(pid for pid in getattr(self, "_started_pids", set()) if _alive(pid))


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"  # a zombie has ended; only its exit status waits to be read
    except (OSError, IndexError):
        return False


def _descendants(root: int) -> list[int]:
    """Every process whose chain of parents leads to ``root``."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found
