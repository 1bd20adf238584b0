"""The one engine-equivalence check of the algorithm tests: the same small digits experiment on the serial engine
and on the vectorized or processes engine, compared round by round (records) and at the end (server parameters).

``kwargs`` are ``make_experiment`` overrides (they configure the experiment, ``rounds`` included); ``steps`` is how
many rounds are actually run and compared."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from fedloom.engines import EngineOptions
from fedloom.run import Experiment

sys.path.insert(0, str(Path(__file__).parent.parent / "engines"))
from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records  # noqa: E402

# spawning workers on a loaded, shared machine can take longer than the default heartbeat timeout (30 s)
WORKER_TIMEOUT = 600.0


def run_on(engine: str, engine_options: EngineOptions = EngineOptions(), steps: int = 2,
           **kwargs: Any) -> tuple[Experiment, list[dict], dict]:
    """(experiment, per-round records, final server parameters) of ``steps`` rounds on ``engine``."""
    exp = on_engine(engine, engine_options, **kwargs)
    records, params = run_records(exp, steps)
    return exp, records, params


def assert_same_outcome(reference: tuple[list[dict], dict], other: tuple[list[dict], dict], tol: float,
                        compare_params: bool) -> None:
    """tol = 0: records equal to the letter (every key) and parameters bit-identical; otherwise within tol."""
    (ref_records, ref_params), (records, params) = reference, other
    if tol == 0:
        assert records == ref_records
    else:
        assert_records_close(ref_records, records, tol=tol)
    if compare_params:
        diff = max_param_diff(ref_params, params)
        assert diff == 0 if tol == 0 else diff < tol, diff


def assert_vectorized_matches_serial(*, slots: int = 3, steps: int = 2, tol: float = 1e-5,
                                     compare_params: bool = True, **kwargs: Any) -> None:
    """The vectorized engine really trains packs (no serial fallback, slot steps taken) and matches serial."""
    _, serial_records, serial_params = run_on("serial", steps=steps, **kwargs)
    exp, records, params = run_on("vectorized", EngineOptions(slots=slots), steps=steps, **kwargs)
    assert exp.engine.serial_reason is None and exp.engine.usage.slot_steps > 0
    assert_same_outcome((serial_records, serial_params), (records, params), tol, compare_params)


def assert_vectorized_falls_back_to_serial(reason: Optional[str] = None, *, slots: int = 2, steps: int = 2,
                                           tol: float = 0.0, compare_params: bool = True, **kwargs: Any) -> None:
    """The vectorized engine declines (its serial_reason names ``reason`` when given) and matches serial."""
    _, serial_records, serial_params = run_on("serial", steps=steps, **kwargs)
    exp, records, params = run_on("vectorized", EngineOptions(slots=slots), steps=steps, **kwargs)
    assert exp.engine.serial_reason is not None
    assert reason is None or reason in exp.engine.serial_reason, exp.engine.serial_reason
    assert_same_outcome((serial_records, serial_params), (records, params), tol, compare_params)


def assert_processes_match_serial(*, steps: int = 2, tol: float = 1e-5, compare_params: bool = True,
                                  **kwargs: Any) -> None:
    """Two spawned workers, each on a vectorized engine of 3 slots, match the serial engine."""
    serial, serial_records, serial_params = run_on("serial", steps=steps, **kwargs)
    workers = EngineOptions(workers=2, worker_engine="vectorized", slots=3, run_config=serial.config,
                            worker_timeout=WORKER_TIMEOUT)
    _, records, params = run_on("processes", workers, steps=steps, **kwargs)
    assert_same_outcome((serial_records, serial_params), (records, params), tol, compare_params)
