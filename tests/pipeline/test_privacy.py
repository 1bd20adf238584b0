"""Client-level DP (DP-FedAvg): ε against a direct dp-accounting computation, σ calibration, clipping, the noise's
standard deviation, the fixed denominator, Poisson sampling, and bad input before training."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

dp_accounting = pytest.importorskip("dp_accounting")

from fedloom.algorithms import ALGORITHMS  # noqa: E402
from fedloom.config import make_component  # noqa: E402
from fedloom.errors import ConfigError  # noqa: E402
from fedloom.pipeline.build import build_aggregator, build_transforms  # noqa: E402
from fedloom.pipeline.chain import UploadPipeline  # noqa: E402
from fedloom.pipeline.context import AggregationContext, TransformContext  # noqa: E402
from fedloom.pipeline.privacy.accountant import PrivacyPlan  # noqa: E402
from fedloom.pipeline.privacy.dp import ClientLevelDP, DpAggregation  # noqa: E402
from fedloom.pipeline.privacy.sampling import PoissonSampler  # noqa: E402
from fedloom.pipeline.transforms import TRANSFORMS  # noqa: E402
from fedloom.run import initial_round, step_round  # noqa: E402

from helpers import make_experiment  # noqa: E402

RUN = SimpleNamespace(join_ratio=0.1, rounds=20)


def bound(**options):
    return ClientLevelDP(**options).bind(RUN, 100)


def direct_epsilon(q: float, z: float, steps: int, delta: float) -> float:
    """The oracle: dp-accounting used by hand, as its documentation shows."""
    accountant = dp_accounting.rdp.RdpAccountant(list(range(2, 65)) + [80, 96, 128, 192, 256])
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return accountant.get_epsilon(delta)


def test_epsilon_equals_a_direct_dp_accounting_computation() -> None:
    plan = PrivacyPlan(1.1, 100, 10, 1e-2, "rdp", "poisson")
    assert plan.epsilon(15) == pytest.approx(direct_epsilon(0.1, 1.1, 15, 1e-2), rel=1e-9)
    assert plan.epsilon(0) == 0.0 and plan.epsilon(16) > plan.epsilon(15)
    pld = dataclasses.replace(plan, accountant="pld")
    assert pld.epsilon(15) <= plan.epsilon(15) * 1.02  # PLD is the tighter accountant (reference §7.2)


def test_epsilon_in_a_run_is_the_accountants_for_the_rounds_so_far() -> None:
    exp = make_experiment(clients=10, join_ratio=0.3, rounds=2, transform="dp",
                          options={"dp": {"clip": 0.5, "noise_multiplier": 0.8}})
    server, _, _ = initial_round(exp)
    for r in (1, 2):
        out = step_round(exp, server, r, {})
        server = out.server
        assert out.record["server_dp_epsilon"] == pytest.approx(direct_epsilon(0.3, 0.8, r, 0.1), rel=1e-6)
    assert out.record["server_dp_delta"] == pytest.approx(0.1)  # default δ = 1/N


def test_calibration_hits_the_target_epsilon() -> None:
    dp = bound(target_epsilon=2.0, delta=1e-3)
    eps = dp.plan.epsilon(RUN.rounds)
    assert eps <= 2.0 + 1e-9 and eps == pytest.approx(2.0, rel=0.01)
    assert direct_epsilon(0.1, dp.plan.noise_multiplier, RUN.rounds, 1e-3) == pytest.approx(eps, rel=1e-6)
    assert bound(target_epsilon=8.0, delta=1e-3).plan.noise_multiplier < dp.plan.noise_multiplier


def test_clipping_bounds_every_contribution() -> None:
    dp = bound(clip=0.7, noise_multiplier=1.0)
    gen = torch.Generator().manual_seed(0)
    for client in range(20):
        upload = {"w": torch.randn(30, generator=gen) * (client + 1), "b": torch.randn(3, generator=gen)}
        out, _ = dp.apply(TransformContext(0, 1, client), upload, None)
        norm = torch.sqrt(sum((t ** 2).sum() for t in out.values()))
        assert norm <= 0.7 + 1e-5
    small = {"w": torch.tensor([0.3, 0.4])}
    assert dp.apply(TransformContext(0, 1, 0), small, None)[0]["w"].tolist() == pytest.approx([0.3, 0.4])


def test_central_noise_has_std_z_s_on_the_sum_and_a_fixed_denominator() -> None:
    dp = bound(clip=2.0, noise_multiplier=1.5)  # σ = 3 on the sum, m = 10
    stage = DpAggregation(dp)
    ctx = AggregationContext(seed=4, round=1, global_params={})
    total = {"w": torch.zeros(40000, dtype=torch.float64)}
    mean = stage.reduce(total, 7.0, 7, ctx)["w"]
    assert float(mean.std()) == pytest.approx(3.0 / 10, rel=0.02)  # 40k draws: ±1.1% at 3 sd
    assert abs(float(mean.mean())) < 0.01
    ones = stage.reduce({"w": torch.full((4,), 7.0, dtype=torch.float64)}, 7.0, 7,
                        None)  # noise from a fixed stream when there is no context
    noiseless = DpAggregation(bound(clip=2.0, noise_multiplier=0.0)).reduce(
        {"w": torch.full((4,), 7.0, dtype=torch.float64)}, 7.0, 7, ctx)
    assert noiseless["w"].tolist() == pytest.approx([0.7] * 4)  # Σ/m with m = 10 expected clients, not the 7 that came
    assert not torch.allclose(ones["w"], noiseless["w"])


def test_distributed_noise_sums_to_the_central_amount() -> None:
    dp = bound(clip=1.0, noise_multiplier=2.0, mode="distributed")
    zero = {"w": torch.zeros(40000)}
    noises = [dp.apply(TransformContext(0, 1, c), zero, None)[0]["w"] for c in range(10)]
    assert float(noises[0].std()) == pytest.approx(2.0 / 10 ** 0.5, rel=0.02)
    assert float(torch.stack(noises).sum(0).std()) == pytest.approx(2.0, rel=0.02)


def test_every_client_counts_once_under_dp() -> None:
    pipe = UploadPipeline(0, (("dp", bound()),))
    assert pipe.weight_of(123.0) == 1.0 and UploadPipeline().weight_of(123.0) == 123.0


def test_poisson_sampling_draws_each_client_with_the_rate() -> None:
    sampler = PoissonSampler()
    sizes = [len(sampler(200, 20, 5, r)) for r in range(200)]
    assert sum(sizes) / len(sizes) == pytest.approx(20, rel=0.05) and len(set(sizes)) > 5
    assert sampler(200, 20, 5, 3) == sampler(200, 20, 5, 3)
    assert bound(sampling="fixed").cohort_sampler is None


def options_of(**dp) -> SimpleNamespace:
    return SimpleNamespace(transform="dp", options={"dp": dp}, join_ratio=0.1, rounds=5, aggregator="mean",
                           attack=None, seed=0)


@pytest.mark.parametrize("options, message", [
    ({"target_epsilon": 0}, "dp.target_epsilon must be > 0"),
    ({"target_epsilon": -1}, "dp.target_epsilon must be > 0"),
    ({"delta": 1.0}, "dp.delta must be"),
    ({"clip": 0}, "dp.clip must be > 0"),
    ({"noise_multiplier": 1.0, "target_epsilon": 2.0}, "exclude each other"),
    ({"sampling": "fixed", "accountant": "pld"}, "RDP only"),
    ({"mode": "local"}, "dp.mode must be one of"),
])
def test_bad_dp_options_are_one_clear_error(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_transforms(options_of(**options))


@pytest.mark.parametrize("spec", ["gaussian,clip", "dp,clip", "quantize,clip"])
def test_an_order_that_makes_no_sense_is_refused(spec) -> None:
    cfg = SimpleNamespace(transform=spec, options={"dp": {"mode": "distributed"}})
    with pytest.raises(ConfigError, match="cannot follow|needs 'clip' before"):
        build_transforms(cfg)


def test_distributed_noise_before_compression_is_refused_and_central_is_not() -> None:
    with pytest.raises(ConfigError, match=r"'topk' \(compress\) cannot follow 'dp' \(noise\)"):
        build_transforms(SimpleNamespace(transform="dp,topk", options={"dp": {"mode": "distributed"}}))
    assert [n for n, _ in build_transforms(SimpleNamespace(transform="dp,topk", options={}))] == ["dp", "topk"]


def test_dp_needs_a_sum_on_the_server() -> None:
    fedavg = make_component(ALGORITHMS, "fedavg", {})
    pipe = UploadPipeline(0, (("dp", bound()),))
    with pytest.raises(ConfigError, match="needs --aggregator mean or secagg"):
        build_aggregator(SimpleNamespace(aggregator="median", options={}, attack=None, join_ratio=0.1), fedavg,
                         100, pipe)
    distributed = UploadPipeline(0, (("dp", bound(mode="distributed")),))
    with pytest.raises(ConfigError, match="use --aggregator secagg"):
        build_aggregator(SimpleNamespace(aggregator="mean", options={}, attack=None, join_ratio=0.1), fedavg, 100,
                         distributed)
    assert "dp" in TRANSFORMS.names()


def test_an_unreachable_target_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot be reached"):
        ClientLevelDP(target_epsilon=1e-6, delta=1e-9).bind(SimpleNamespace(join_ratio=1.0, rounds=1000), 10)


def items_with_norms(norms: list[float]) -> list:
    return [(i, {"w": torch.tensor([n, 0.0])}, 3.0) for i, n in enumerate(norms)]


def test_adaptive_clipping_moves_the_bound_by_the_papers_rule() -> None:
    dp = ClientLevelDP(clip=1.5, noise_multiplier=0.0, adaptive=True, target_quantile=0.5,
                       clip_lr=0.2).bind(SimpleNamespace(join_ratio=0.04, rounds=5), 100)  # m = 4
    stage = DpAggregation(dp)
    assert stage.needs_all and dp.apply(TransformContext(0, 1, 0), {"w": torch.ones(9) * 5}, None)[0]["w"][0] == 5
    ctx = AggregationContext(seed=0, round=1, global_params={})
    out = stage.aggregate(items_with_norms([1.0, 2.0, 3.0, 4.0]), ctx)
    assert out["w"].tolist() == pytest.approx([(1.0 + 1.5 * 3) / 4, 0.0])  # clipped at 1.5, Σ / m
    # one of four unclipped: b = 0.25 < γ = 0.5, so the bound grows: C ← 1.5·exp(−0.2·(0.25 − 0.5))
    assert float(ctx.state["dp_clip"]) == pytest.approx(1.5 * math.exp(0.05))
    assert ctx.metrics["dp_clip"] == 1.5 and ctx.metrics["dp_unclipped_estimate"] == 0.25


def test_adaptive_clipping_tracks_the_target_quantile() -> None:
    dp = ClientLevelDP(clip=0.1, noise_multiplier=0.0, adaptive=True, target_quantile=0.5,
                       clip_lr=0.2).bind(SimpleNamespace(join_ratio=0.1, rounds=5), 100)  # m = 10
    ctx = AggregationContext(seed=0, round=1, global_params={})
    for _ in range(200):
        DpAggregation(dp).aggregate(items_with_norms([float(n) for n in range(1, 11)]), ctx)
    assert 4.5 <= float(ctx.state["dp_clip"]) <= 6.5  # the median norm is 5.5


def test_adaptive_clipping_spends_part_of_the_noise_on_the_count() -> None:
    dp = ClientLevelDP(noise_multiplier=1.0, adaptive=True).bind(SimpleNamespace(join_ratio=1.0, rounds=5), 100)
    assert dp.count_noise == 5.0  # m / 20
    assert dp.update_multiplier == pytest.approx((1 - 1 / 100) ** -0.5)
    with pytest.raises(ConfigError, match="must exceed z/2"):
        ClientLevelDP(noise_multiplier=3.0, adaptive=True).bind(SimpleNamespace(join_ratio=0.1, rounds=5), 100)
    with pytest.raises(ConfigError, match="cannot be combined with dp.mode distributed"):
        build_transforms(options_of(adaptive=True, mode="distributed"))


def test_the_adaptive_bound_is_kept_in_the_server_state_across_rounds() -> None:
    exp = make_experiment(clients=10, join_ratio=0.5, rounds=2, transform="dp",
                          options={"dp": {"clip": 0.01, "noise_multiplier": 0.5, "adaptive": True,
                                          "count_noise": 1.0, "sampling": "fixed"}})
    server, _, _ = initial_round(exp)
    clips = []
    for r in (1, 2):
        out = step_round(exp, server, r, {})
        server = out.server
        clips.append(out.record["server_dp_clip"])
    assert clips[0] == pytest.approx(0.01) and clips[1] > clips[0]  # every update is longer than 0.01: the bound grew


@pytest.mark.slow
def test_central_noise_on_the_reduced_sum_is_the_same_on_every_engine() -> None:
    """Worker partial sums merge before the server adds the noise: processes equal serial bit for bit, also when
    Poisson sampling leaves a round empty."""
    params = {}
    for engine in ("serial", "processes"):
        exp = make_experiment(clients=10, join_ratio=0.1, engine=engine, transform="dp",
                              options={"dp": {"noise_multiplier": 1.0}})
        server, _, _ = initial_round(exp)
        sizes = []
        for r in range(1, 5):
            out = step_round(exp, server, r, {})
            server, sizes = out.server, sizes + [out.record["clients_sampled"]]
        exp.engine.close()
        params[engine] = server.state.params
        assert 0 in sizes and max(sizes) > 0  # seed 3: an empty round and non-empty ones
    assert all(torch.equal(params["serial"][k], params["processes"][k]) for k in params["serial"])
