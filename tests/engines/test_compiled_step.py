"""--compile: plain local SGD through torch.compile equals the eager loop to float rounding; hooks, attacks and a
failing compiler keep the eager loop (bit for bit)."""

from __future__ import annotations

import pytest
import torch

import fedloom.engines.compiled_step as compiled
from fedloom.algorithms.base import Broadcast

from engine_helpers import on_engine, run_records
from helpers import make_experiment


def records(**overrides):
    return run_records(on_engine("serial", **overrides), 2)


@pytest.fixture(autouse=True)
def _fresh_compiler_state(monkeypatch):
    monkeypatch.setattr(compiled, "_STEPS", {})
    monkeypatch.setattr(compiled, "_failed", [])


def test_a_failing_compiler_falls_back_to_the_eager_step_with_one_warning(monkeypatch):
    calls = []

    def broken(fn, **kwargs):
        def call(*args):
            calls.append(1)
            raise RuntimeError("no C compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    eager, params = records(clients=4, momentum=0.9)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        fallback, fallback_params = records(clients=4, momentum=0.9, compile=True)
    assert len(calls) == 1  # tried once, then eager for the rest of the process
    assert [r["accuracy"] for r in fallback] == [r["accuracy"] for r in eager]
    # the eager functional step (torch.func) and the autograd loop agree to rounding
    assert all(torch.allclose(params[k], fallback_params[k], atol=1e-6) for k in params)


def test_local_sgd_with_hooks_never_takes_the_compiled_step(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("compiled a hooked step"))
    exp = make_experiment(clients=2, compile=True, algorithm="fedprox")  # FedProx adds an extra loss term
    ctx = exp.runtime.client_context(0, 1)
    ctx.local_sgd(dict(exp.runtime.init_params), extra_loss=lambda w, aux: w["head.bias"].sum() * 0)


def test_the_compiled_step_runs_plain_sgd(monkeypatch):
    # torch.compile replaced by the identity: the functional step itself is what is checked here, fast
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    eager, p_eager = records(clients=4, momentum=0.9, weight_decay=0.01)
    stepped, p_step = records(clients=4, momentum=0.9, weight_decay=0.01, compile=True)
    assert compiled._STEPS, "the compiled path was not taken"
    for a, b in zip(eager, stepped):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.02)
    assert all(torch.allclose(p_eager[k], p_step[k], atol=1e-5) for k in p_eager)


@pytest.mark.slow  # a real inductor compile: seconds to tens of seconds
def test_inductor_compiled_run_equals_eager_to_rounding():
    eager, p_eager = records(clients=4)
    fast, p_fast = records(clients=4, compile=True)
    assert not compiled._failed, compiled._failed
    for a, b in zip(eager, fast):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    worst = max(float((p_eager[k] - p_fast[k]).abs().max()) for k in p_eager)
    assert worst < 1e-4, worst  # float rounding of fused kernels, amplified over 2 rounds of SGD


def test_a_decaying_learning_rate_reuses_one_compiled_step(monkeypatch):
    """--lr-decay with --compile: the rate is an input of the step, so every round uses the one compiled step
    (no compile per round) and trains as the eager loop's decayed rate."""
    compiles = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiles.append(fn) or fn)
    eager, p_eager = run_records(on_engine("serial", clients=4, momentum=0.9, lr_decay=0.5), 3)
    stepped, p_step = run_records(on_engine("serial", clients=4, momentum=0.9, lr_decay=0.5, compile=True), 3)
    assert len(compiles) == 1 and len(compiled._STEPS) == 1
    assert all(torch.allclose(p_eager[k], p_step[k], atol=1e-5) for k in p_eager)
    undecayed, p_plain = run_records(on_engine("serial", clients=4, momentum=0.9, compile=True), 3)
    assert max(float((p_plain[k] - p_step[k]).abs().max()) for k in p_step) > 1e-3  # the decay took effect
