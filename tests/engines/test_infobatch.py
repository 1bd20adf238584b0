"""InfoBatch on the local-training seam (Qin et al., ICLR 2024): the pruning rule on hand-set scores, its
unbiasedness, the annealing after δ, scores kept across rounds, the same results on the serial and vectorized
engines, and bad input as one clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fedloom.cli import main
from fedloom.engines import EngineOptions
from fedloom.engines.infobatch import InfoBatch, InfoBatchSchedule
from fedloom.engines.local_training import split_training

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records  # noqa: E402


def plan_with(scores: list[float], r: float = 0.5, delta: float = 1.0, planned: int = 10, seed: int = 0,
              epochs: int = 0):
    schedule = InfoBatchSchedule(r, delta, planned)
    state = {"scores": torch.tensor(scores), "epochs": torch.tensor(epochs)}
    return schedule.plan(state, torch.arange(100, 100 + len(scores)), torch.Generator().manual_seed(seed))


def test_a_fresh_client_keeps_every_sample_in_its_first_epoch() -> None:
    plan = InfoBatchSchedule(0.7, 0.875, 8).plan(None, torch.arange(50), torch.Generator().manual_seed(0))
    positions, weights = plan.next_epoch()
    assert positions.tolist() == list(range(50)) and torch.all(weights == 1)
    assert plan.metrics() == {"sample_passes": 50.0, "sample_passes_saved": 0.0}


def test_only_below_mean_samples_are_pruned_and_kept_ones_are_rescaled() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 0.05, 0.15, 7.0, 0.25]  # mean 1.945: D1 = the seven small ones
    plan = plan_with(scores, r=0.5)
    positions, weights = plan.next_epoch()
    below = {i for i, s in enumerate(scores) if s < sum(scores) / len(scores)}
    skipped = set(range(10)) - set(positions.tolist())
    assert skipped <= below and {4, 5, 8} <= set(positions.tolist())
    assert len(below - skipped) == int(len(below) * 0.5) == 3  # ⌊(1−r)|D1|⌋ kept
    for position, weight in zip(positions.tolist(), weights.tolist()):
        assert weight == pytest.approx(2.0 if position in below else 1.0)  # 1/(1−r) for kept D1 samples
    assert plan.metrics()["sample_passes_saved"] == 4


def test_the_expected_weighted_epoch_gradient_equals_the_full_one() -> None:
    # per-sample "gradients" g_i; over many draws Σ_kept w_i g_i averages to Σ_i g_i (unbiased pruning)
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(40, generator=generator).tolist()
    grads = torch.randn(40, 3, generator=generator)
    total = torch.zeros(3)
    draws = 4000
    for seed in range(draws):
        positions, weights = plan_with(scores, r=0.5, seed=seed).next_epoch()
        total += (weights[:, None] * grads[positions]).sum(0)
    assert torch.allclose(total / draws, grads.sum(0), atol=0.15)
    no_rescale = plan_with(scores, r=0.5, seed=0).next_epoch()[0]
    assert not torch.allclose(grads[no_rescale].sum(0), grads.sum(0), atol=0.15)  # without 1/(1−r) it is biased


def test_pruning_stops_after_delta_of_the_planned_epochs() -> None:
    scores = [0.1, 0.2, 3.0, 4.0] * 5
    plan = plan_with(scores, r=0.5, delta=0.5, planned=4)  # prune in epochs 0 and 1 only
    sizes = [int(plan.next_epoch()[0].shape[0]) for _ in range(4)]
    assert sizes[0] < 20 and sizes[1] < 20 and sizes[2:] == [20, 20]
    assert plan.state()["epochs"] == 4


def test_scores_become_the_unweighted_losses_and_skipped_samples_keep_theirs() -> None:
    plan = plan_with([1.0, 2.0, 3.0])
    plan.record(torch.tensor([2, 0]), torch.tensor([0.5, 0.25]))
    assert plan.state()["scores"].tolist() == [0.25, 2.0, 0.5]


def test_the_schedule_plans_epochs_from_the_expected_participations() -> None:
    assert InfoBatch(0.5, 0.875).schedule(rounds=10, join_ratio=0.5, num_clients=20, local_epochs=2) == \
        InfoBatchSchedule(0.5, 0.875, 10)


def test_ratio_zero_trains_exactly_like_the_plain_loop() -> None:
    plain, _ = run_records(on_engine("serial", clients=4), 2)
    zero, _ = run_records(on_engine("serial", clients=4, options={"infobatch": {"prune_ratio": 0.0}}), 2)
    assert_records_close(plain, zero, tol=1e-5)
    assert zero[-1]["sample_passes_saved"] == 0 and zero[-1]["sample_passes"] > 0


def test_scores_persist_in_the_client_state_and_prune_from_the_second_round() -> None:
    exp = on_engine("serial", clients=4, rounds=3, local_epochs=1, options={"infobatch": {"prune_ratio": 0.5}})
    records, _ = run_records(exp, 3)
    assert records[1]["sample_passes_saved"] == 0  # every client's first epoch is full
    assert records[2]["sample_passes_saved"] > 0 and records[3]["sample_passes_saved"] > 0
    _, training = split_training(exp.runtime.store.load(0))
    assert training is not None and int(training["epochs"]) == 3 and training["scores"].std() > 0


def test_vectorized_matches_serial_and_really_vectorizes() -> None:
    kwargs = dict(clients=5, join_ratio=0.9, local_epochs=2, options={"infobatch": {"prune_ratio": 0.6}})
    serial_records, serial_params = run_records(on_engine("serial", **kwargs), 2)
    vectorized = on_engine("vectorized", EngineOptions(slots=3), **kwargs)
    vector_records, vector_params = run_records(vectorized, 2)
    assert vectorized.engine.serial_reason is None and vectorized.engine.usage.slot_steps > 0
    assert_records_close(serial_records, vector_records, tol=1e-5)
    assert [r.get("sample_passes_saved") for r in serial_records] == \
        [r.get("sample_passes_saved") for r in vector_records]
    assert serial_records[-1]["sample_passes_saved"] > 0
    assert max_param_diff(serial_params, vector_params) < 1e-5


def test_works_with_an_algorithm_that_has_its_own_batch_loss() -> None:
    kwargs = dict(algorithm="moon", clients=4, options={"infobatch": {"prune_ratio": 0.5}})
    records, _ = run_records(on_engine("serial", **kwargs), 2)
    assert records[-1]["sample_passes_saved"] > 0


FAST = ["run", "--quiet", "--rounds", "1", "--dataset", "digits", "--device", "cpu", "--clients", "4"]
BAD = [
    (["--infobatch.prune-ratio", "0.95"], "infobatch.prune_ratio must be in [0, 0.9]"),
    (["--infobatch.delta", "0"], "infobatch.delta must be in (0, 1]"),
    (["--infobatch.delta", "1.5"], "infobatch.delta must be"),
    (["--infobatch.prune-ratio", "0.5", "--transform", "sample-dp"], "cannot be combined with --transform sample-dp"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=[" ".join(row[0][:2]) for row in BAD])
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    code = main([*FAST, *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fedloom: error: "), err
    assert expected in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # spawning workers takes longer than a unit test may
def test_processes_match_serial() -> None:
    from helpers import make_experiment

    kwargs = dict(clients=6, join_ratio=0.7, options={"infobatch": {"prune_ratio": 0.5}})
    reference, ref_params = run_records(on_engine("serial", **kwargs), 3)
    base = make_experiment(**kwargs)
    options = EngineOptions(workers=2, worker_engine="vectorized", slots=3, run_config=base.config,
                            worker_timeout=300.0)  # worker start-up on a loaded machine
    records, params = run_records(on_engine("processes", options, **kwargs), 3)
    assert_records_close(reference, records, tol=1e-5)
    assert [r.get("sample_passes_saved") for r in reference] == [r.get("sample_passes_saved") for r in records]
    assert max_param_diff(ref_params, params) < 1e-5


@pytest.mark.slow  # three short runs
def test_a_resumed_run_keeps_the_scores_and_is_byte_identical(tmp_path: Path) -> None:
    import dataclasses

    from helpers import small_config
    from fedloom.run import run_experiment

    cfg = dataclasses.replace(small_config(rounds=4, checkpoint_every=1, quiet=True,
                                           options={"infobatch": {"prune_ratio": 0.5}}), out=str(tmp_path / "a"))
    full = run_experiment(cfg)
    again = dataclasses.replace(cfg, out=str(tmp_path / "b"))
    run_experiment(again, progress=lambda round_, record: round_ < 3)  # stops after round 3 (checkpoint: 2)
    resumed = run_experiment(again, resume=True)
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert resumed.summary["sample_passes_saved"] == full.summary["sample_passes_saved"] > 0
