"""The build floor (one constructor of a Runtime, no engine imports fedloom.run, workers build one engine),
namespaced engine options with their old flags as aliases (same resolved config, same run hash), the sharded
engine over a transport, and optional packages imported only when chosen."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fedloom.checkpoint import config_hash, config_identity
from fedloom.cli import make_parser, raw_from_args
from fedloom.config import RUN_FIELDS, build_config, load_toml
from fedloom.config_checks import to_toml
from fedloom.engines import ENGINE_OPTIONS, ENGINES, Engine, EngineOptions
from fedloom.engines.build import build_runtime, engine_options
from fedloom.engines.options import stored_fields
from fedloom.engines.sharded import ShardedEngine, Transport
from fedloom.engines.worker import ShardWorker, build_worker_engine, describe, raise_remote
from fedloom.errors import ConfigError, TrainingError
from fedloom.extras import require
from fedloom.run import build_experiment, load_data, resolve_config

from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records
from helpers import make_experiment, small_config

OPTIONAL = ("tensorboard", "mlflow", "ray", "flwr", "transformers")


def _python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ import floors
def test_no_engine_module_imports_the_run_module() -> None:
    loaded = _python(
        "import importlib, json, pkgutil, sys, fedloom.engines as e\n"
        "names = [m.name for m in pkgutil.iter_modules(e.__path__, 'fedloom.engines.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps([names, 'fedloom.run' in sys.modules, 'fedloom.cli' in sys.modules]))")
    names, run_loaded, cli_loaded = loaded
    assert {"fedloom.engines.build", "fedloom.engines.sharded", "fedloom.engines.transport_mp",
            "fedloom.engines.worker", "fedloom.engines.processes"} <= set(names)
    assert not run_loaded and not cli_loaded


def test_cli_and_run_import_no_optional_package() -> None:
    loaded = _python(
        "import json, sys, contextlib, io\n"
        "import fedloom.cli, fedloom.run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: fedloom.cli.main(['run', '--help'])\n"
        "    except SystemExit: pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r})))")
    assert loaded == []


def test_require_names_the_extra_to_install() -> None:
    assert require("json", "none") is json
    with pytest.raises(ConfigError, match=r"^engine 'ray' needs the optional package 'fedloom_no_such_pkg': "
                                          r"pip install 'fedloom\[ray\]'$"):
        require("fedloom_no_such_pkg.sub", "ray", "engine 'ray'")


# ------------------------------------------------------------------------------------------------ one constructor
def test_build_runtime_is_what_build_experiment_runs_on() -> None:
    cfg = small_config(algorithm="local", model="mlp,logreg", clients=4)
    exp = build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
    built = build_runtime(cfg)  # loads the data itself, on cfg.device
    assert built.config == exp.config and built.algorithm == exp.algorithm
    a, b = built.runtime, exp.runtime
    assert (a.sgd, a.seed, a.device, a.total_rounds, a.eval_batch_size, a.precision) == \
        (b.sgd, b.seed, b.device, b.total_rounds, b.eval_batch_size, b.precision)
    assert type(a.store) is type(b.store) and type(a.task) is type(b.task)
    assert a.architectures.names == b.architectures.names and a.architectures.arch_of == b.architectures.arch_of
    assert all(torch.equal(a.init_params[k], b.init_params[k]) for k in b.init_params)
    assert all(torch.equal(x, y) for x, y in zip(a.data.train_idx, b.data.train_idx))


def test_a_worker_builds_exactly_one_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = Engine.__init__

    def counting(self: Engine, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).registry_name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "__init__", counting)
    cfg = small_config(engine="processes", workers=2)
    for inner in ("serial", "vectorized"):
        built.clear()
        engine = build_worker_engine(cfg, inner, engine_options(cfg))
        assert built == [inner] and engine.options.run_config is None  # no throwaway engine, no nested workers


# ------------------------------------------------------------------------------------------------ engine options
def _resolve(*argv: str) -> Any:
    args = make_parser().parse_args(["run", "--out", "runs/x", *argv])
    return resolve_config(build_config(raw_from_args(args)))


@pytest.mark.parametrize("old, new", [
    (["--engine", "processes", "--workers", "2", "--worker-engine", "vectorized", "--pack-size", "16"],
     ["--engine", "processes", "--processes.workers", "2", "--processes.worker-engine", "vectorized",
      "--vectorized.pack-size", "16"]),
    (["--engine", "vectorized", "--pack-size", "8"], ["--engine", "vectorized", "--vectorized.pack-size", "8"]),
    (["--engine", "processes", "--worker-timeout", "5"], ["--engine", "processes", "--processes.timeout", "5"]),
    (["--engine", "processes", "--workers", "3"], ["--engine", "processes", "--set", "processes.workers=3"]),
])
def test_namespaced_engine_options_resolve_like_their_aliases(old: list[str], new: list[str]) -> None:
    before, after = _resolve(*old), _resolve(*new)
    assert after == before and to_toml(after) == to_toml(before)
    assert config_hash(after) == config_hash(before)
    assert not set(after.options) & set(ENGINE_OPTIONS.names())  # stored in the fields, never as a table


def test_an_engine_table_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('engine = "processes"\n[processes]\nworkers = 2\nworker_engine = "vectorized"\n'
                    '[vectorized]\npack_size = 4\n')
    cfg = resolve_config(build_config({**load_toml(path), "out": "runs/x"}))
    assert (cfg.workers, cfg.worker_engine, cfg.pack_size) == (2, "vectorized", 4)
    reference = _resolve("--engine", "processes", "--workers", "2", "--worker-engine", "vectorized",
                         "--pack-size", "4")
    assert config_identity(cfg) == config_identity(reference)


@pytest.mark.parametrize("argv, message", [
    (["--engine", "processes", "--workers", "3", "--processes.workers", "2"],
     "--processes.workers 2 disagrees with workers = 3 (its alias --workers"),
    (["--engine", "serial", "--processes.workers", "2"],
     "options for engine 'processes' were given, but the run uses serial"),
    (["--engine", "processes", "--vectorized.pack-size", "4"],
     "options for engine 'vectorized' were given, but the run uses processes with workers running serial"),
    (["--engine", "processes", "--processes.workers", "0"], "processes.workers must be >= 1, got 0"),
    (["--engine", "processes", "--processes.worker-engine", "warp"],
     "processes.worker_engine must be one of serial, vectorized, got 'warp'"),
    (["--engine", "processes", "--processes.timeout", "0"], "processes.timeout must be > 0, got 0"),
    (["--engine", "processes", "--processes.start", "thread"],
     "processes.start must be one of auto, fork, spawn, got 'thread'"),
    (["--engine", "vectorized", "--vectorized.pack-size", "0"], "vectorized.pack_size must be >= 1, got 0"),
    (["--engine", "processes", "--set", "processes.wrkers=2"], "unknown option(s) ['processes.wrkers']"),
])
def test_engine_options_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(*argv)
    assert message in str(info.value)


def test_same_value_twice_is_fine_and_options_match_their_fields() -> None:
    cfg = _resolve("--engine", "processes", "--workers", "2", "--processes.workers", "2")
    assert cfg.workers == 2
    assert ENGINE_OPTIONS.names() == ENGINES.names()
    for name, cls in ENGINE_OPTIONS.items():
        for option, target in stored_fields(cls).items():
            default = next(f.default for f in dataclasses.fields(cls) if f.name == option)
            assert default == RUN_FIELDS[target].default, (name, option)


def test_the_cli_has_a_flag_per_engine_option() -> None:
    text = make_parser()._subparsers._group_actions[0].choices["run"].format_help()  # noqa: SLF001
    for flag in ("--processes.workers", "--processes.worker-engine", "--processes.timeout",
                 "--vectorized.pack-size", "--workers", "--worker-engine", "--worker-timeout", "--pack-size"):
        assert flag in text, flag


# ------------------------------------------------------------------------------------------------ sharded engine
class InProcessTransport(Transport):
    """A transport without processes: ShardWorkers in this process, every message pickled both ways as it
    would be on a pipe. It shows what a new transport (Ray actors) has to provide, and nothing more."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.workers: list[ShardWorker] = []
        self.closed = 0

    def start(self, count: int) -> None:
        self.workers = [ShardWorker(self.options.run_config, self.options.worker_engine, self.options)
                        for _ in range(count)]

    def scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        replies = {}
        for index, share in shares.items():
            try:
                reply = self.workers[index].handle(command, pickle.loads(pickle.dumps(share)))
            except Exception as exc:
                raise_remote(describe(exc), index)
            replies[index] = pickle.loads(pickle.dumps(reply))
        return replies

    def close(self) -> None:
        self.closed += 1
        self.workers = []


class InProcessEngine(ShardedEngine):
    def make_transport(self) -> Transport:
        return InProcessTransport(self.options)


@pytest.mark.parametrize("algorithm, inner", [("fedavg", "serial"), ("local", "vectorized")])
def test_the_sharded_engine_over_another_transport_matches_serial(algorithm: str, inner: str) -> None:
    kwargs = dict(algorithm=algorithm, clients=6, join_ratio=0.7)
    reference, ref_params = run_records(on_engine("serial", **kwargs), 2)
    base = make_experiment(**kwargs)
    for workers in (1, 3):
        options = EngineOptions(workers=workers, worker_engine=inner, slots=3, run_config=base.config)
        engine = InProcessEngine(base.runtime, options)
        assert len(engine.transport.workers) == workers
        records, params = run_records(dataclasses.replace(base, engine=engine), 2)
        assert_records_close(reference, records, tol=1e-5)
        assert max_param_diff(ref_params, params) < 1e-5
        assert engine.transport.closed == 1


def test_a_worker_error_keeps_its_type_through_the_transport() -> None:
    base = make_experiment(algorithm="fedavg", clients=4, lr=1e12)
    options = EngineOptions(workers=2, run_config=base.config)
    exp = dataclasses.replace(base, engine=InProcessEngine(base.runtime, options))
    with pytest.raises(TrainingError, match="non-finite"):
        run_records(exp, 2)


@pytest.mark.parametrize("changes, message", [
    ({"worker_start": "thread"}, "--processes.start must be auto, fork or spawn, got 'thread'"),
    ({"worker_start": "fork", "device": "cuda"}, "--processes.start fork cannot be used with a CUDA device"),
])
def test_worker_start_is_checked_before_any_worker_starts(changes: dict, message: str) -> None:
    from fedloom.engines.transport_mp import start_method

    cfg = dataclasses.replace(_resolve("--engine", "processes"), **changes)
    with pytest.raises(ConfigError) as info:
        start_method(cfg)
    assert message in str(info.value)
