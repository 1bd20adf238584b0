"""The processes engine: N worker processes, one torch thread each, clients sticky to workers.

It is the sharded engine (sharded.py: who owns which client, shares, merging partial uploads, broadcasts sent
once) over the multiprocessing transport (transport_mp.py: spawned processes, pipes, heartbeats, stopping them).
Workers rebuild data, model and algorithm from the resolved run config with the build floor (build.py), as a
worker on another machine would; ``--processes.start`` chooses how they start: ``fork`` (Linux, CPU: a copy of the
main process, so imports are done and the dataset's pages are shared; the worker's own rebuild is then a few
milliseconds) or ``spawn`` (fresh interpreters; required with CUDA, the default elsewhere). Options:
``--processes.workers``, ``--processes.worker-engine``, ``--processes.timeout``, ``--processes.start`` (aliases
``--workers``, ``--worker-engine``, ``--worker-timeout``, ``--worker-start``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedloom.engines.base import ENGINE_OPTIONS, ENGINES
from fedloom.engines.options import engine_option
# assign_clients and the transport's helpers stay importable from here (they lived here before the split)
from fedloom.engines.sharded import ShardedEngine, Transport, assign_clients, for_clients  # noqa: F401
from fedloom.engines.transport_mp import (POLL_SECONDS, STARTUP_SECONDS, STOP_SECONDS, TEMP_PREFIX,  # noqa: F401
                                          TERMINATE_SECONDS, UNRESPONSIVE_SECONDS, MultiprocessingTransport,
                                          WorkerLink, _SharedTempDir, exit_description, heartbeat_silence,
                                          stop_workers, sweep_stale_temp_dirs, temp_root)


# the processes engine's options: --processes.<option> or a [processes] table (no docstring: `fedloom list`
# shows the module's first line)
@ENGINE_OPTIONS.register("processes")
@dataclass(frozen=True)
class ProcessesOptions:
    workers: Optional[int] = engine_option(None, "workers", "worker processes (default: number of cores)", ge=1)
    worker_engine: str = engine_option("serial", "worker_engine", "engine inside each worker",
                                       choices=("serial", "vectorized"))
    timeout: float = engine_option(30.0, "worker_timeout", "seconds without a worker heartbeat before the run ends "
                                                           "(a frozen or stopped worker)", gt=0)
    start: str = engine_option("auto", "worker_start", "how workers start: fork (a copy of the main process: no "
                                                       "imports, data already loaded), spawn (fresh interpreters "
                                                       "that rebuild everything, as on another machine), auto (fork "
                                                       "on Linux with a CPU device, else spawn)",
                               choices=("auto", "fork", "spawn"))


@ENGINES.register("processes")
class ProcessEngine(ShardedEngine):
    """The sharded engine over spawned worker processes of this machine."""

    def make_transport(self) -> Transport:
        return MultiprocessingTransport(self.options)
