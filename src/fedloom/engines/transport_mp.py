"""The multiprocessing transport of the sharded engine (the processes engine): worker processes (forked or
spawned), one pipe each, heartbeats, and stopping them whatever their state.

Each worker's pipe is served by a thread of the main process (send the request, receive the reply, which may
also fetch tensors from the worker), and the main thread waits for replies in short slices, checking between
them that every worker it waits for is alive and that its heartbeat (see worker.py) is fresher than
``--processes.timeout``. A dead worker or a stale heartbeat ends the run with one TrainingError; ``close`` then
stops every worker whatever its state (stop message, SIGTERM, SIGKILL, which also ends a stopped process).
Multiprocessing's temporary files live in one folder per main process, ``$TMPDIR/fedloom-mp-<pid>-*``, removed
by ``close`` and swept at the next start when its owner has died without closing (kill -9).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing import process as mp_process, resource_sharer, util as mp_util
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Iterable, NoReturn, Optional

from fedloom.engines.base import EngineOptions
from fedloom.engines.sharded import Transport, resume_hint
from fedloom.engines.worker import HEARTBEAT_SECONDS, raise_remote, worker_main
from fedloom.errors import ConfigError, TrainingError

#: How long the main thread waits for a reply before it checks the workers' health again. Waiting returns as
#: soon as a reply arrives, so this bounds only how late a fault is noticed, never a round's time.
POLL_SECONDS = 0.1
#: A worker that has not beaten yet is starting (interpreter, imports, data): it gets at least this long.
STARTUP_SECONDS = 60.0
#: close(): how long workers get to leave after the stop message, then after SIGTERM. A worker whose heartbeat
#: is already older than UNRESPONSIVE_SECONDS (three missed beats) gets SIGKILL at once: it is not going to
#: read a stop message (a stopped process does not even take SIGTERM).
STOP_SECONDS = 2.0
TERMINATE_SECONDS = 1.0
UNRESPONSIVE_SECONDS = 3 * HEARTBEAT_SECONDS
#: Multiprocessing's temporary folder of a main process: prefix + pid + "-" + random.
TEMP_PREFIX = "fedloom-mp-"
#: Socket paths in that folder must fit in an AF_UNIX address (104 bytes on macOS, 108 on Linux).
SOCKET_PATH_MAX = 103


def heartbeat_silence(last_beat: float, started: float, now: float, timeout: float,
                      startup: float = STARTUP_SECONDS) -> Optional[float]:
    """Seconds a worker has been silent when that is longer than allowed, else None. ``last_beat`` 0 means it
    has not beaten yet (it is still starting), which is allowed ``max(timeout, startup)`` from ``started``."""
    if last_beat == 0.0:
        silent, limit = now - started, max(timeout, startup)
    else:
        silent, limit = now - last_beat, timeout
    return silent if silent > limit else None


def exit_description(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Lost:
    """Put in the reply queue in place of a reply when a worker's pipe broke (the exception says how)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class WorkerLink:
    """One worker as the main process sees it: its process, pipe and heartbeat, and the thread that talks to
    it. Requests are pickled by the caller (a snapshot of the objects as they are now) and written by the
    thread, so the main thread never blocks on a full pipe or a reply that cannot be read."""

    def __init__(self, index: int, process: Any, conn: Connection, beat: Any, replies: queue.SimpleQueue) -> None:
        self.index, self.process, self.conn, self.beat = index, process, conn, beat
        self.started = time.monotonic()
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.replies = replies
        self.thread = threading.Thread(target=self._serve, name=f"fedloom-link-{index}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        """Wait for start-up, then, per request: send it, receive the reply, hand it to the main thread."""
        expect_reply = True
        while True:
            try:
                if expect_reply:
                    self.replies.put((self.index, self.conn.recv()))
                message, expect_reply = self.requests.get()
                if message is None:
                    return
                self.conn.send_bytes(message)
            except BaseException as exc:  # EOF, broken pipe, a tensor that can no longer be fetched
                self.replies.put((self.index, _Lost(exc)))
                return

    def request(self, command: str, payload: Any = None, expect_reply: bool = True) -> None:
        self.requests.put((ForkingPickler.dumps((command, payload)), expect_reply))

    def problem(self, now: float, timeout: float) -> Optional[str]:
        """Why this worker cannot answer (dead, or silent for longer than ``timeout``), or None."""
        code = self.process.exitcode
        if code is not None:
            return self.death()
        silent = heartbeat_silence(self.beat.value, self.started, now, timeout)
        if silent is not None:
            return (f"worker {self.index} (pid {self.process.pid}) stopped answering: no heartbeat for "
                    f"{silent:.0f} s (frozen or stopped?)")
        return None

    def unresponsive(self, now: float) -> bool:
        """Beating once, and no longer (a worker that has not beaten yet is still starting)."""
        last = self.beat.value
        return last != 0.0 and now - last > UNRESPONSIVE_SECONDS

    def death(self) -> str:
        self.process.join(timeout=1)
        return (f"worker {self.index} (pid {self.process.pid}) died unexpectedly "
                f"({exit_description(self.process.exitcode)}; see the messages above)")

    def shut(self) -> None:
        """Ask the worker to leave and end this link's thread once it has nothing left to wait for."""
        self.request("stop", expect_reply=False)
        self.requests.put((None, False))


def start_method(cfg: Any) -> str:
    """The run's ``--processes.start``: fork or spawn (``auto``: fork on Linux with a CPU device, where a copy of
    the main process starts in milliseconds with its imports done and its dataset pages shared; spawn elsewhere,
    and always with CUDA, which cannot be used in a forked child)."""
    method = getattr(cfg, "worker_start", "auto") if cfg is not None else "auto"
    if method not in ("auto", "fork", "spawn"):  # the alias --worker-start bypasses the options table's check
        raise ConfigError(f"--processes.start must be auto, fork or spawn, got {method!r}")
    cuda = cfg is not None and (cfg.device.startswith("cuda") or (cfg.device == "auto" and _cuda_available()))
    if method == "fork" and cuda:
        raise ConfigError("--processes.start fork cannot be used with a CUDA device (CUDA does not survive a fork); "
                          "use --processes.start spawn")
    if method == "auto":
        method = "fork" if sys.platform == "linux" and not cuda and "fork" in mp.get_all_start_methods() else "spawn"
    return method


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _close_connection(conn: Connection) -> None:
    conn.close()


class MultiprocessingTransport(Transport):
    """Workers as processes of this machine, one torch thread each; each rebuilds everything from the run config,
    as a worker on another machine would (forked workers find their imports done and the dataset's pages mapped,
    so that rebuild takes milliseconds; see ``start_method``)."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.links: list[WorkerLink] = []
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._temp: Optional[str] = None
        self._started = False

    def start(self, count: int) -> None:
        self._temp = _temp_dir.acquire()  # before the processes exist: they inherit the folder
        _live_transports.add(self)
        method = start_method(self.options.run_config)
        context = mp.get_context(method)
        started = []
        for index in range(count):
            parent, child = context.Pipe()
            if method == "fork":  # a forked worker must not hold the main process's end of any worker's pipe
                mp_util.register_after_fork(parent, _close_connection)
            beat = context.RawValue("d", 0.0)  # 0: not beating yet
            process = context.Process(target=worker_main, name=f"fedloom-worker-{index}", daemon=True,
                                      args=(child, self.options.run_config, self.options.worker_engine,
                                            self.options, beat))
            process.start()
            child.close()
            started.append((index, process, parent, beat))
        # the link threads start after the last fork: a forked child never inherits a thread's half-held lock
        self.links = [WorkerLink(*link, self._replies) for link in started]
        self._gather(range(count))  # wait until every worker has built its data and model
        self._started = True

    def scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        """Send every worker its share, then collect the replies (workers compute concurrently)."""
        if not self.links:
            raise RuntimeError("the workers have been stopped (the engine is closed)")
        for index, share in shares.items():
            self.links[index].request(command, share)
        return self._gather(shares)

    # ------------------------------------------------------------------ waiting
    def _gather(self, indices: Iterable[int]) -> dict[int, Any]:
        """The replies of workers ``indices``, waiting in short slices and checking between them that every
        worker still waited for is alive and beating. An error a worker reports is raised once every other
        worker has replied too (the lowest index's first): a reply left in the queue would be taken for the
        answer to the next request (a run that records its divergence goes on to evaluate)."""
        pending, replies, reported = set(indices), {}, {}
        next_check = time.monotonic() + POLL_SECONDS
        while pending:
            try:
                index, reply = self._replies.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
            else:
                if isinstance(reply, tuple) and reply[0] == "error":
                    reported[index] = reply[1]
                else:
                    replies[index] = self._unwrap(index, reply)
                pending.discard(index)
            now = time.monotonic()
            if pending and now >= next_check:
                try:
                    self._check(pending, now)
                except TrainingError:
                    if not reported:
                        raise
                    pending.clear()  # a worker also failed to answer: the reported error is the cause to name
                next_check = now + POLL_SECONDS
        if reported:
            first = min(reported)
            raise_remote(reported[first], first)
        return replies

    def _unwrap(self, index: int, reply: Any) -> Any:
        if isinstance(reply, _Lost):
            link = self.links[index]
            if link.process.exitcode is None:
                link.process.join(timeout=1)  # the pipe broke because it is dying: report the death
            if link.process.exitcode is None:
                raise TrainingError(f"worker {index} (pid {link.process.pid}) broke its connection: "
                                    f"{type(reply.error).__name__}: {reply.error}")
            self._fail(link.death())
        status, payload = reply
        if status == "error":
            raise_remote(payload, index)
        return payload

    def _check(self, pending: Iterable[int], now: float) -> None:
        for index in sorted(pending):
            problem = self.links[index].problem(now, self.options.worker_timeout)
            if problem:
                self._fail(problem)

    def _fail(self, problem: str) -> NoReturn:
        if not self._started:  # no run folder yet: nothing to resume
            raise TrainingError(f"{problem} while starting")
        raise TrainingError(f"{problem}; {resume_hint(self.options.run_config)}")

    # ------------------------------------------------------------------ stopping
    def close(self) -> None:
        """Stop every worker whatever its state: the stop message, then SIGTERM, then SIGKILL (the only one a
        stopped process obeys); then the temporary folder goes. Safe to call twice."""
        links, self.links = self.links, []
        stop_workers(links)
        _live_transports.discard(self)
        if self._temp is not None:
            self._temp = None
            _temp_dir.release()

    def __del__(self) -> None:  # an engine nobody closed still stops its workers
        if getattr(self, "links", None) or getattr(self, "_temp", None):
            self.close()


def stop_workers(links: list[WorkerLink]) -> None:
    """Ask every worker to leave, then SIGTERM those still there, then SIGKILL (a stopped process ignores
    everything else); each step waits at most a couple of seconds for all of them together."""
    now = time.monotonic()
    for link in links:
        if link.unresponsive(now):
            link.process.kill()
        link.shut()
    _join_all([link.process for link in links], STOP_SECONDS)
    for signal_them in ("terminate", "kill"):
        alive = [link.process for link in links if link.process.exitcode is None]
        for process in alive:
            getattr(process, signal_them)()
        _join_all(alive, TERMINATE_SECONDS)
    # a dead worker's pipe gives its link thread EOF; close the pipes only once those threads are gone, so
    # that none of them ever reads a reused descriptor number
    _join_all([link.thread for link in links], TERMINATE_SECONDS)
    for link in links:
        link.conn.close()


def _join_all(joinables: list[Any], seconds: float) -> None:
    """Join every process or thread, all within one deadline of ``seconds``."""
    deadline = time.monotonic() + seconds
    for item in joinables:
        item.join(timeout=max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------------------- temporary files
class _SharedTempDir:
    """The folder multiprocessing puts its sockets in (``multiprocessing.util.get_temp_dir``: torch passes
    tensors between processes as file descriptors, through a listener socket in it), one per main process and
    shared by its workers, which inherit it when they are created. Left to itself, multiprocessing makes a
    ``pymp-*`` folder in every process and removes it only at a clean exit of that process, so every killed
    worker leaves one behind. Here the main process owns the only one and removes it when its last engine
    closes; a main process killed with SIGKILL leaves it, and the next start removes it as soon as its owner
    pid is dead."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.path: Optional[str] = None
        self.previous: Optional[str] = None

    def acquire(self) -> str:
        with self.lock:
            if self.users == 0:
                for root in {tempfile.gettempdir(), temp_root()}:
                    sweep_stale_temp_dirs(root)
                config = mp_process.current_process()._config  # noqa: SLF001 (the one place it is kept)
                self.previous = config.get("tempdir")
                self.path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=temp_root())
                config["tempdir"] = self.path
            self.users += 1
            return self.path

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users > 0 or self.path is None:
                return
            try:
                resource_sharer.stop(timeout=1)  # its listener socket lives in the folder; it restarts on demand
            except OSError:  # its socket is already gone: the folder goes anyway
                pass
            mp_process.current_process()._config["tempdir"] = self.previous  # noqa: SLF001
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def temp_root() -> str:
    """The system temporary folder, or /tmp when that one's path is too long for the sockets that
    multiprocessing makes in it (a long $TMPDIR, as on macOS, would fail every tensor transfer)."""
    root = tempfile.gettempdir()
    longest = os.path.join(root, f"{TEMP_PREFIX}{os.getpid()}-xxxxxxxx", "listener-xxxxxxxx")
    if len(longest.encode()) > SOCKET_PATH_MAX and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return root


def sweep_stale_temp_dirs(root: str) -> list[str]:
    """Remove the ``fedloom-mp-<pid>-*`` folders in ``root`` whose owner process is dead; return them."""
    removed = []
    pattern = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_temp_dir = _SharedTempDir()
_live_transports: "weakref.WeakSet[MultiprocessingTransport]" = weakref.WeakSet()


@atexit.register
def _close_live_transports() -> None:
    """A transport nobody closed (an exception that skipped close) still stops its workers and removes its
    folder at exit; registered after multiprocessing's own exit hook, so it runs before that hook would
    join (forever) a stopped worker."""
    for transport in list(_live_transports):
        transport.close()
