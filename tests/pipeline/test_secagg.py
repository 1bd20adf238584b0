"""Secure aggregation simulation: the sum survives any n − t dropouts exactly, a masked vector says nothing
checkable about its update, Shamir thresholds, fixed point, and the aggregator in a real round."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("cryptography")

from fedloom.errors import ConfigError, TrainingError  # noqa: E402
from fedloom.pipeline.context import AggregationContext  # noqa: E402
from fedloom.pipeline.secagg import shamir  # noqa: E402
from fedloom.pipeline.secagg.aggregator import FixedPoint, SecureAggregation  # noqa: E402
from fedloom.pipeline.secagg.protocol import Client, Server, client_upload_bytes  # noqa: E402
from fedloom.run import initial_round, step_round  # noqa: E402
from fedloom.seeding import numpy_generator  # noqa: E402

from helpers import make_experiment  # noqa: E402

BITS = 24


def run_protocol(inputs: dict[int, np.ndarray], dropped: set[int], t: int) -> np.ndarray:
    ids = sorted(inputs)
    clients = {u: Client.create(u, numpy_generator(0, 1, u, "keys")) for u in ids}
    server = Server(BITS, t, {u: c.public_key() for u, c in clients.items()})
    for u, client in clients.items():
        for peer, share in client.share_keys(ids, t, numpy_generator(0, 1, u, "shares")).items():
            clients[peer].received[u] = share
    survivors = set(ids) - dropped
    masked = {u: clients[u].masked_input(inputs[u], server.public_keys, BITS) for u in survivors}
    shares = {u: clients[u].unmasking_shares(survivors, ids) for u in survivors}
    return server.unmask(masked, shares, ids)


def test_the_secure_sum_is_exact_under_any_n_minus_t_dropouts() -> None:
    rng = np.random.default_rng(0)
    n, t = 5, 3
    inputs = {u: rng.integers(0, 2 ** BITS, size=16, dtype=np.uint64) for u in range(n)}
    for k in range(n - t + 1):
        for dropped in itertools.combinations(range(n), k):
            expected = sum(inputs[u] for u in range(n) if u not in dropped) & np.uint64(2 ** BITS - 1)
            assert np.array_equal(run_protocol(inputs, set(dropped), t), expected), dropped
    with pytest.raises(ValueError, match="fewer than the threshold"):
        run_protocol(inputs, {0, 1, 2}, t)


def test_a_masked_vector_is_uncorrelated_with_its_update() -> None:
    code = FixedPoint(32, 1.0, 4)
    x = np.sin(np.linspace(0, 20, 5000)) * 0.9
    inputs = {u: code.encode(x * (u + 1) / 4) for u in range(4)}
    ids = sorted(inputs)
    clients = {u: Client.create(u, numpy_generator(0, 1, u, "keys")) for u in ids}
    keys = {u: c.public_key() for u, c in clients.items()}
    y = clients[1].masked_input(inputs[1], keys, 32).astype(np.float64)
    assert abs(np.corrcoef(y, x)[0, 1]) < 0.05
    assert abs(np.corrcoef(code.decode(inputs[1]), x)[0, 1]) > 0.99  # the unmasked encoding is the update
    assert y.mean() / 2 ** 32 == pytest.approx(0.5, abs=0.02)  # uniform-looking over Z_{2^32}


def test_shamir_needs_exactly_t_shares() -> None:
    rng = numpy_generator(0, 0, 0, "test")
    secret = int.from_bytes(bytes(range(32)), "big")
    shares = shamir.split(secret, 6, 4, rng)
    assert shamir.reconstruct(shares[:4]) == secret == shamir.reconstruct(shares[2:])
    assert shamir.reconstruct(shares[:3]) != secret


def test_fixed_point_sum_never_wraps_and_errs_by_half_a_step() -> None:
    code = FixedPoint(16, 2.0, 10)
    assert 10 * 2.0 * code.scale < 2 ** 15
    x = np.full(10, 2.0)
    total = sum(code.encode(x) for _ in range(10)) & np.uint64(2 ** 16 - 1)
    assert np.allclose(code.decode(total), 20.0)
    z = np.linspace(-1.9, 1.9, 101)
    assert np.abs(code.decode(code.encode(z)) - z).max() <= 0.5 / code.scale + 1e-12


def test_the_aggregator_returns_the_survivors_mean_up_to_quantization() -> None:
    gen = torch.Generator().manual_seed(0)
    items = [(c, {"w": torch.rand(40, generator=gen) - 0.5, "b": torch.rand(2, generator=gen) - 0.5}, 5.0)
             for c in range(7)]
    ctx = AggregationContext(seed=1, round=2, global_params={})
    agg = SecureAggregation(bits=32, dropout=0.3)
    out = agg.aggregate(items, ctx)
    dropped = numpy_generator(1, 2, -1, "secagg-dropout").random(7) < 0.3
    kept = [u for (c, u, _), d in zip(items, dropped) if not d]
    assert 0 < len(kept) < 7 and ctx.metrics["secagg_survivors"] == len(kept)
    for name in ("w", "b"):
        plain = torch.stack([u[name] for u in kept]).mean(0)
        assert torch.allclose(out[name], plain, atol=1e-6)
    assert ctx.metrics["secagg_client_bytes"] == client_upload_bytes(7, 42, 32) > ctx.metrics["secagg_plain_bytes"]


def test_too_few_survivors_and_a_threshold_above_the_cohort_are_clear_errors() -> None:
    items = [(c, {"w": torch.zeros(3)}, 1.0) for c in range(4)]
    with pytest.raises(TrainingError, match="fewer than the threshold"):
        SecureAggregation(threshold=4, dropout=0.9).aggregate(items, AggregationContext(0, 1, {}))
    with pytest.raises(ConfigError, match="secagg.threshold 9 is larger than the cohort"):
        make_experiment(clients=4, aggregator="secagg", options={"secagg": {"threshold": 9}})


def test_distributed_dp_over_secure_aggregation_runs_a_round() -> None:
    pytest.importorskip("dp_accounting")
    exp = make_experiment(clients=6, join_ratio=0.5, aggregator="secagg", transform="dp",
                          options={"dp": {"mode": "distributed", "clip": 0.5, "sampling": "fixed"},
                                   "secagg": {"clip_range": 0.5}})
    server, _, _ = initial_round(exp)
    out = step_round(exp, server, 1, {})
    assert out.record["server_secagg_survivors"] == 3 and out.record["server_dp_epsilon"] > 0
    assert np.isfinite(out.record["accuracy"])
