"""The processes engine against the serial reference."""

import dataclasses

import pytest

from fedloom.engines import EngineOptions
from fedloom.engines.processes import assign_clients
from fedloom.errors import TrainingError

from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records
from helpers import make_experiment


def processes(workers: int, inner: str = "serial", **overrides):
    base = make_experiment(**overrides)
    options = EngineOptions(workers=workers, worker_engine=inner, slots=3, run_config=base.config)
    return on_engine("processes", options, **overrides)


def test_lpt_assignment_balances_expected_work() -> None:
    work = [3, 5, 2, 5, 4, 3]
    owned = assign_clients(work, workers=2)
    assert sorted(c for clients in owned for c in clients) == list(range(6))
    # LPT by hand: 5->w0, 5->w1, 4->w0 (9), 3->w1 (8), 3->w1 (11), 2->w0 (11)
    assert [sum(work[c] for c in clients) for clients in owned] == [11, 11]


@pytest.mark.parametrize("algorithm, inner", [("fedavg", "serial"), ("local", "vectorized"),
                                              ("fedavg-ft", "serial")])
def test_processes_match_serial_whatever_the_worker_count(algorithm: str, inner: str) -> None:
    kwargs = dict(algorithm=algorithm, clients=6, join_ratio=0.7)
    reference, ref_params = run_records(on_engine("serial", **kwargs), 2)
    for workers in (1, 2):
        records, params = run_records(processes(workers, inner, **kwargs), 2)
        assert_records_close(reference, records, tol=1e-5)
        assert max_param_diff(ref_params, params) < 1e-5


def test_client_states_live_in_workers_and_can_be_exported_and_restored() -> None:
    exp = processes(2, algorithm="local", clients=4)
    run_records_no_close(exp, 1)
    states = list(exp.engine.client_states())
    assert [c for c, _ in states] == [0, 1, 2, 3]
    exp.engine.restore_client_states(states)
    exp.engine.close()


def run_records_no_close(exp, rounds):
    from fedloom.run import initial_round, step_round

    server, _, _ = initial_round(exp)
    for r in range(1, rounds + 1):
        server = step_round(exp, server, r, {}).server


def test_a_diverging_client_in_a_worker_is_one_clear_error() -> None:
    exp = processes(2, algorithm="fedavg", clients=4, lr=1e12)
    with pytest.raises(TrainingError, match="non-finite"):
        run_records(exp, 2)
    exp.engine.close()
