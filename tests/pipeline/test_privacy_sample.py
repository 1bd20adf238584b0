"""Sample-level DP-SGD: per-sample clipping against a hand-written loop, the noise's standard deviation, ε from
dp-accounting for the smallest client, and the serial fallback of a vectorized engine."""

from __future__ import annotations

import math

import pytest
import torch

dp_accounting = pytest.importorskip("dp_accounting")

from fedloom.pipeline.privacy.sample import PerSampleClipper, SampleLevelDP  # noqa: E402
from fedloom.run import initial_round, step_round  # noqa: E402

from helpers import make_experiment  # noqa: E402


def linear_loss(params, x, y):
    return ((x @ params["w"] + params["b"] - y) ** 2).mean()


def test_each_samples_gradient_is_clipped_before_the_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, generator=gen), "b": torch.zeros(())}
    x, y = torch.randn(6, 3, generator=gen) * 3, torch.randn(6, generator=gen)
    clipper = PerSampleClipper(clip=0.5, noise_std=0.0, generator=torch.Generator().manual_seed(1))
    got = clipper.gradients(linear_loss, params, ["w", "b"], x, y, batch_size=8)
    expected = [torch.zeros(3), torch.zeros(())]
    for i in range(6):  # by hand: one sample at a time, clipped to 0.5, summed, divided by B = 8
        w, b = params["w"].clone().requires_grad_(), params["b"].clone().requires_grad_()
        gw, gb = torch.autograd.grad(linear_loss({"w": w, "b": b}, x[i:i + 1], y[i:i + 1]), [w, b])
        norm = torch.sqrt(gw.pow(2).sum() + gb.pow(2))
        scale = min(1.0, 0.5 / float(norm))
        expected = [expected[0] + gw * scale, expected[1] + gb * scale]
    assert torch.allclose(got[0], expected[0] / 8, atol=1e-6) and torch.allclose(got[1], expected[1] / 8, atol=1e-6)
    plain = torch.autograd.grad(linear_loss({"w": params["w"].requires_grad_(), "b": params["b"]}, x, y),
                                [params["w"]])[0]
    assert not torch.allclose(got[0], plain * 6 / 8, atol=1e-3)  # clipping changed it


def test_the_noise_has_std_z_c_over_b() -> None:
    params = {"w": torch.zeros(20000)}
    flat = lambda p, x, y: (p["w"].sum() * 0.0 + x.sum() * 0.0)  # noqa: E731  (zero gradient)
    clipper = PerSampleClipper(clip=2.0, noise_std=3.0, generator=torch.Generator().manual_seed(2))
    (g,) = clipper.gradients(flat, params, ["w"], torch.zeros(4, 1), torch.zeros(4), batch_size=10)
    assert float(g.std()) == pytest.approx(3.0 / 10, rel=0.03)


def test_epsilon_is_the_smallest_clients_composed_over_local_steps_and_rounds() -> None:
    plan = SampleLevelDP(noise_multiplier=1.2).plan([50, 80, 30], batch_size=8, epochs=2)
    assert (plan.population, plan.cohort, plan.steps_per_round, plan.delta) == (30, 8, 2 * math.ceil(30 / 8), 1 / 30)
    accountant = dp_accounting.rdp.RdpAccountant(list(range(2, 65)) + [80, 96, 128, 192, 256])
    event = dp_accounting.PoissonSampledDpEvent(8 / 30, dp_accounting.GaussianDpEvent(1.2))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, 3 * 8))
    assert plan.epsilon(3) == pytest.approx(accountant.get_epsilon(1 / 30), rel=1e-9)


def run_one_round(engine: str) -> tuple[dict, dict]:
    exp = make_experiment(clients=3, engine=engine, transform="sample-dp", batch_size=64,
                          options={"sample-dp": {"clip": 0.5, "noise_multiplier": 0.8}})
    server, _, _ = initial_round(exp)
    out = step_round(exp, server, 1, {})
    return out.record, out.server.state.params


def test_a_run_reports_sample_level_epsilon() -> None:
    record, _ = run_one_round("serial")
    assert record["server_sample_dp_epsilon"] > 0 and record["server_sample_dp_noise_multiplier"] == 0.8


@pytest.mark.slow
def test_a_vectorized_engine_falls_back_to_the_same_result() -> None:
    (_, serial), (_, vectorized) = run_one_round("serial"), run_one_round("vectorized")
    assert all(torch.equal(serial[k], vectorized[k]) for k in serial)
