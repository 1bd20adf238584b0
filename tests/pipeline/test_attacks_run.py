"""Attacks in real (tiny) runs: the attack success rate, data poisoning on every engine path, exact cohorts,
omniscient attacks around the aggregator, the CLI end to end and its bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.engines import ENGINES, EngineOptions
from fedloom.pipeline.aggregators import Mean, Median
from fedloom.pipeline.attacks import Colluding
from fedloom.run import initial_round, sample_cohort, step_round
from fedloom.rounds import attack_metrics

from helpers import make_experiment


def attacked(attack: str, engine: str = "serial", threat: dict | None = None, **overrides):
    options = {"attack": {"fraction": 0.5, **(threat or {})}, **overrides.pop("options", {})}
    exp = make_experiment(attack=attack, options=options, **overrides)
    if engine != "serial":
        exp = dataclasses.replace(exp, engine=ENGINES.get(engine)(exp.runtime, EngineOptions(slots=4)))
    return exp


def test_asr_is_the_share_of_stamped_non_target_samples_classified_as_target() -> None:
    exp = attacked("badnets", options={"badnets": {"target": 2}}, clients=4)
    params = exp.runtime.init_params
    data = exp.runtime.data
    hits = total = 0
    for idx in data.test_idx:
        y = data.dataset.y[idx]
        x = data.dataset.x[idx][y != 2].clone()  # the target class is excluded
        x[:, :, 4:7, 4:7] = 1.0  # the 3x3 trigger, rows/cols 4..6 of 8x8
        predicted = exp.runtime.apply(params, x).argmax(dim=1)
        hits, total = hits + int((predicted == 2).sum()), total + x.shape[0]
    server, record, _ = initial_round(exp)
    assert record["asr"] == pytest.approx(hits / total)
    assert total < sum(int(idx.numel()) for idx in data.test_idx)
    assert attack_metrics(make_experiment(clients=4), server.broadcast, [0], 0) == {}  # no attack, no asr


def _train(exp, rounds: int = 1) -> tuple[list[dict], dict]:
    server, record, _ = initial_round(exp)
    records = [record]
    for r in range(1, rounds + 1):
        out = step_round(exp, server, r, {})
        server, records = out.server, records + [out.record]
    exp.engine.close()
    return records, server.state.params


def test_poisoned_batches_train_alike_in_the_serial_loop_and_in_vectorized_packs() -> None:
    kwargs = dict(clients=6, lr=0.1, options={"badnets": {"pdr": 1.0}})
    serial_records, serial = _train(attacked("badnets", **kwargs))
    vectorized = attacked("badnets", "vectorized", **kwargs)
    packed_records, packed = _train(vectorized)
    assert vectorized.engine.serial_reason is None  # the packs trained the malicious clients themselves
    assert max(float((serial[k] - packed[k]).abs().max()) for k in serial) < 1e-5
    assert packed_records[-1]["asr"] == pytest.approx(serial_records[-1]["asr"], abs=1e-6)
    _, clean = _train(attacked("badnets", threat={"fraction": 0.0}, **kwargs))
    assert max(float((serial[k] - clean[k]).abs().max()) for k in serial) > 1e-3  # poisoning changed training


def test_exact_sampling_gives_every_round_its_attackers() -> None:
    exp = attacked("signflip", threat={"fraction": 0.2, "sampling": "exact"}, clients=20, join_ratio=0.5)
    malicious, sampler = exp.runtime.uploads.malicious, exp.runtime.uploads.cohort_sampler
    cohorts = [sample_cohort(20, 0.5, exp.config.seed, r, sampler) for r in range(1, 9)]
    assert len(malicious) == 4 and all(sum(c in malicious for c in cohort) == 2 for cohort in cohorts)
    plain = [sample_cohort(20, 0.5, exp.config.seed, r) for r in range(1, 9)]
    assert {sum(c in malicious for c in cohort) for cohort in plain} != {2}  # plain sampling varies


def test_an_omniscient_attack_wraps_the_configured_aggregator_and_changes_the_round() -> None:
    exp = attacked("ipm", options={"ipm": {"epsilon": 1.0}}, clients=4)
    assert isinstance(exp.runtime.aggregator, Colluding) and isinstance(exp.runtime.aggregator.inner, Mean)
    assert exp.runtime.keep_all(exp.algorithm)
    wrapped = attacked("minmax", clients=6, aggregator="median")
    assert isinstance(wrapped.runtime.aggregator.inner, Median)
    _, poisoned = _train(exp)
    _, clean = _train(attacked("ipm", threat={"fraction": 0.0}, clients=4))
    assert max(float((poisoned[k] - clean[k]).abs().max()) for k in poisoned) > 1e-4


def _cli_run(tmp_path: Path, name: str, *extra: str, attack: str = "badnets") -> list[dict]:
    out = tmp_path / name
    argv = ["run", "--dataset", "digits", "--algorithm", "fedavg", "--attack", attack, "--attack.fraction", "0.2",
            "--clients", "10", "--join-ratio", "0.5", "--rounds", "2", "--model", "mlp", "--batch-size", "32",
            "--device", "cpu", "--quiet",
            "--out", str(out), *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_badnets_run_reports_asr_every_evaluated_round(tmp_path: Path) -> None:
    records = _cli_run(tmp_path, "serial", "--attack.sampling", "exact")
    assert [record["round"] for record in records] == [0, 1, 2]
    assert all(0.0 <= record["asr"] <= 1.0 for record in records)
    assert [record["attackers_sampled"] for record in records[1:]] == [1, 1]  # round(5 · 0.2) in cohorts of 5 (of 10 clients)


@pytest.mark.slow  # spawns two worker processes (12-35 s on a busy 2-core machine)
@pytest.mark.parametrize("attack", ["badnets", "dba"])
def test_cli_run_reports_asr_identically_on_serial_and_processes(attack: str, tmp_path: Path) -> None:
    serial = _cli_run(tmp_path, "serial", "--attack.sampling", "exact", attack=attack)
    processes = _cli_run(tmp_path, "processes", "--attack.sampling", "exact", "--engine", "processes",
                         "--workers", "2", attack=attack)
    assert all("asr" in record for record in serial) and processes == serial


@pytest.mark.parametrize("argv, message", [
    (["--attack", "badnets", "--attack.fraction", "1"], "attack.fraction must be in [0, 1), got 1.0"),
    (["--attack", "badnets", "--badnets.size", "9"], "outside the 8x8 image"),
    (["--attack", "backdoor"], "unknown attack 'backdoor'")])
def test_bad_attack_input_is_one_line(argv: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--dataset", "digits", "--clients", "5", "--rounds", "1", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "bad"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
