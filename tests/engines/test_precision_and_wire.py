"""Forward precision (bfloat16 autocast), the evaluation chunk size, and the processes engine's broadcast reuse."""

import pytest
import torch

from fedloom.algorithms.base import Broadcast
from fedloom.checkpoint import config_hash, config_identity
from fedloom.engines.processes import ProcessEngine
from fedloom.engines.worker import SAME_BROADCAST

from engine_helpers import on_engine, run_records
from helpers import make_experiment, small_config


def test_bfloat16_changes_the_arithmetic_but_not_the_learning() -> None:
    fp32, _ = run_records(on_engine("serial", rounds=3), 3)
    bf16, _ = run_records(on_engine("serial", rounds=3, precision="bfloat16"), 3)
    assert fp32[-1]["loss"] != bf16[-1]["loss"]  # autocast really ran
    assert abs(fp32[-1]["accuracy"] - bf16[-1]["accuracy"]) < 0.05
    assert bf16[-1]["accuracy"] > bf16[0]["accuracy"] + 0.2


def test_bfloat16_runs_on_the_vectorized_engine_too() -> None:
    serial, _ = run_records(on_engine("serial", clients=6, precision="bfloat16"), 2)
    packed, _ = run_records(on_engine("vectorized", clients=6, precision="bfloat16"), 2)
    assert abs(serial[-1]["accuracy"] - packed[-1]["accuracy"]) < 0.05


def test_precision_enters_the_run_identity_only_when_it_is_not_the_default() -> None:
    default, bf16 = small_config(), small_config(precision="bfloat16")
    assert "precision" not in config_identity(default)  # existing run folders keep their names
    assert config_identity(bf16)["precision"] == "bfloat16"
    assert config_hash(default) != config_hash(bf16)
    assert config_hash(small_config(eval_batch_size=7)) == config_hash(default)


def test_an_option_added_later_enters_the_identity_only_when_it_is_not_the_default() -> None:
    plain = small_config(algorithm="pfedme", options={"pfedme": {"lamda": 15.0}})
    at_default = small_config(algorithm="pfedme", options={"pfedme": {"lamda": 15.0, "evaluate": "personal"}})
    local = small_config(algorithm="pfedme", options={"pfedme": {"lamda": 15.0, "evaluate": "local"}})
    assert "evaluate" not in config_identity(at_default)["options"]["pfedme"]
    assert at_default.options["pfedme"]["evaluate"] == "personal"  # the config itself is untouched
    assert config_hash(at_default) == config_hash(plain) != config_hash(local)


def test_evaluation_chunk_size_does_not_change_accuracy() -> None:
    assert make_experiment().runtime.eval_batch_size == 256  # automatic on CPU
    chunked = on_engine("serial", eval_batch_size=7)
    assert chunked.runtime.eval_batch_size == 7
    reference, _ = run_records(on_engine("serial"), 1)
    records, _ = run_records(chunked, 1)
    assert [r["accuracy"] for r in records] == [r["accuracy"] for r in reference]
    assert records[-1]["loss"] == pytest.approx(reference[-1]["loss"], rel=1e-6)


def test_a_worker_is_sent_each_broadcast_once() -> None:
    engine = ProcessEngine.__new__(ProcessEngine)  # only the bookkeeping, no processes
    engine._last_sent = {}
    shared = Broadcast({"w": torch.zeros(2)})
    assert engine._wire(0, shared, [0, 1]) is shared
    assert engine._wire(0, shared, [0, 1]) == SAME_BROADCAST  # evaluation, then next round's training
    assert engine._wire(1, shared, [2]) is shared  # another worker has not seen it
    assert engine._wire(0, Broadcast({"w": torch.ones(2)}), [0, 1]) != SAME_BROADCAST
    personal = Broadcast({"w": torch.zeros(2)}, personal={0: {"h": torch.ones(1)}, 1: {"h": torch.zeros(1)}})
    first = engine._wire(0, personal, [0, 1])
    assert set(first.personal) == {0, 1}
    assert engine._wire(0, personal, [0, 1]) == SAME_BROADCAST
    assert set(engine._wire(0, personal, [0]).personal) == {0}  # other clients: their personal parts differ
