"""The vectorized engine against the serial reference."""

import logging

import pytest
import torch
import torch.nn.functional as F

from fedloom.engines import EngineOptions
from fedloom.engines.local_sgd import LocalSGD, SGDConfig, StepDraws, with_draws
from fedloom.engines.pack_sgd import PackHooks, PackJob, PackSGD, client_batches
from fedloom.rounds import federation_of

from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records


def linear_per_sample(p, x, y):
    return F.cross_entropy(x @ p["w"].T + p["b"], y, reduction="none")


def test_pack_sgd_matches_local_sgd_per_client_with_ragged_batches_and_momentum() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    params = {"w": torch.randn(3, 5, generator=g), "b": torch.zeros(3)}
    cfg = SGDConfig(lr=0.2, batch_size=4, epochs=2, momentum=0.9, weight_decay=0.01)
    client_idx = [torch.arange(0, 7), torch.arange(7, 30), torch.arange(30, 33), torch.arange(33, 60)]
    jobs = [PackJob(i, i, client_batches(idx, cfg, torch.Generator().manual_seed(10 + i)))
            for i, idx in enumerate(client_idx)]
    packed, metrics = PackSGD(linear_per_sample, x, y, slots=2).run(params, set(), jobs, 4, cfg, PackHooks())
    serial = LocalSGD(lambda p, xb, yb: linear_per_sample(p, xb, yb).mean(), x, y, "t")
    for i, idx in enumerate(client_idx):
        ref, ref_metrics = serial.run(params, idx, cfg, torch.Generator().manual_seed(10 + i))
        for k in params:  # one client, same batches: equal up to float32 rounding
            torch.testing.assert_close(packed[k][i], ref[k], rtol=1e-5, atol=1e-6)
        assert metrics["steps"][i] == ref_metrics["steps"] and metrics["samples"][i] == ref_metrics["samples"]
        assert abs(float(metrics["train_loss"][i]) - ref_metrics["train_loss"]) < 1e-5


def coupled_loss(p, x, y, aux, shift):
    """Per-sample CE plus a batch-level term (the batch's mean logit, moved by a per-step draw): padding would
    enter the mean, and the draw must come from the client's own stream in the serial order."""
    logits = x @ p["w"].T + p["b"]
    return F.cross_entropy(logits, y, reduction="none") + (logits.mean(0) * shift).sum() ** 2


@pytest.mark.parametrize("exact", [True, False])
def test_packs_step_a_coupled_losss_partial_batches_without_padding(exact: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 5, generator=g), torch.randint(0, 3, (50,), generator=g)
    params = {"w": torch.randn(3, 5, generator=g), "b": torch.zeros(3)}
    cfg = SGDConfig(lr=0.1, batch_size=4, epochs=2, momentum=0.5)
    client_idx = [torch.arange(0, 9), torch.arange(9, 30), torch.arange(30, 37), torch.arange(37, 50)]
    draws = StepDraws("shift", lambda gen, batch: torch.randn(3, generator=gen))
    jobs = [PackJob(i, i, client_batches(idx, cfg, torch.Generator().manual_seed(20 + i)),
                    draw_generator=torch.Generator().manual_seed(40 + i)) for i, idx in enumerate(client_idx)]
    hooks = PackHooks(batch_loss=coupled_loss, draws=draws, exact_partial=True)
    if not exact:  # the padded step kept: what the exact step replaces (draws force it, so none here)
        hooks = PackHooks(batch_loss=lambda p, x, y, aux: coupled_loss(p, x, y, aux, torch.ones(3)))
        draws = StepDraws("shift", lambda gen, batch: torch.ones(3))
    packed, _ = PackSGD(linear_per_sample, x, y, slots=3).run(params, set(), jobs, 4, cfg, hooks)
    serial = LocalSGD(lambda p, xb, yb: linear_per_sample(p, xb, yb).mean(), x, y, "t")
    diffs = []
    for i, idx in enumerate(client_idx):
        loss = with_draws(coupled_loss, draws, torch.Generator().manual_seed(40 + i))
        ref, _ = serial.run(params, idx, cfg, torch.Generator().manual_seed(20 + i), batch_loss=loss)
        diffs.append(max(float((packed[k][i] - ref[k]).abs().max()) for k in params))
    assert (max(diffs) < 1e-5) == exact, diffs  # every client has a partial batch: padding would show


def test_one_local_step_matches_serial_to_float32_rounding() -> None:
    serial = on_engine("serial", algorithm="fedavg", clients=6, local_epochs=1)
    vector = on_engine("vectorized", EngineOptions(slots=4), algorithm="fedavg", clients=6, local_epochs=1)
    for exp in (serial, vector):
        exp.runtime.sgd = SGDConfig(lr=0.05, batch_size=10_000, epochs=1)  # one full-batch step per client
    server = serial.algorithm.init_server(serial.runtime.init_params, federation_of(serial.data))
    a = serial.engine.train_cohort(serial.algorithm, server.broadcast, list(range(6)), 1).uploads.weighted_mean()
    b = vector.engine.train_cohort(vector.algorithm, server.broadcast, list(range(6)), 1).uploads.weighted_mean()
    assert max_param_diff(a, b) < 1e-6


@pytest.mark.parametrize("algorithm, options", [("fedavg", {}), ("fedprox", {"fedprox": {"mu": 0.5}}),
                                                ("local", {}), ("fedavg-ft", {}), ("fedrep", {}), ("ditto", {}),
                                                ("fedper", {}), ("fedbabu", {})])
def test_full_runs_match_serial_and_really_vectorize(algorithm: str, options: dict) -> None:
    kwargs = dict(algorithm=algorithm, options=options, clients=7, join_ratio=0.9, momentum=0.5, rounds=3)
    serial_records, serial_params = run_records(on_engine("serial", **kwargs), 3)
    vectorized = on_engine("vectorized", EngineOptions(slots=3), **kwargs)
    vector_records, vector_params = run_records(vectorized, 3)
    assert vectorized.engine.serial_reason is None  # no silent fallback to the loop
    assert vectorized.engine.usage.slot_steps > 0
    assert_records_close(serial_records, vector_records, tol=1e-5)
    assert max_param_diff(serial_params, vector_params) < 1e-5


def test_pack_size_does_not_change_results() -> None:
    results = [run_records(on_engine("vectorized", EngineOptions(slots=s, pack_clients=p), algorithm="fedavg",
                                     clients=8), 2)[1] for s, p in [(2, 3), (8, 256), (5, 8)]]
    assert max_param_diff(results[0], results[1]) < 1e-6 and max_param_diff(results[0], results[2]) < 1e-6


def test_non_vectorizable_algorithm_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from fedloom.algorithms.fedavg import FedAvg

    class Loopy(FedAvg):
        vectorizable = False

    exp = on_engine("vectorized", algorithm="fedavg", clients=5)
    import dataclasses

    exp = dataclasses.replace(exp, algorithm=Loopy())
    with caplog.at_level(logging.WARNING):
        run_records(exp, 2)
    warnings = [r for r in caplog.records if "running Loopy serially" in r.getMessage()]
    assert len(warnings) == 1


def test_using_a_client_id_inside_a_pack_falls_back_to_serial() -> None:
    from fedloom.algorithms.fedavg import FedAvg

    class NeedsId(FedAvg):
        def client_update(self, ctx, broadcast, state):
            _ = ctx.client_id  # not available for a pack
            return super().client_update(ctx, broadcast, state)

    import dataclasses

    reference, _ = run_records(on_engine("serial", algorithm="fedavg", clients=5), 1)
    exp = dataclasses.replace(on_engine("vectorized", algorithm="fedavg", clients=5), algorithm=NeedsId())
    records, _ = run_records(exp, 1)
    assert records[-1]["accuracy"] == reference[-1]["accuracy"]


def test_hand_batched_cnn_layers_match_serial_with_hooks() -> None:
    from torch.func import functional_call

    from fedloom.engines.pack_sgd import BatchedModel
    from fedloom.models import build_model

    model = build_model("cnn", {}, (1, 16, 16), 4, seed=0).requires_grad_(False)
    params = {k: v.clone() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(45, 1, 16, 16, generator=g), torch.randint(0, 4, (45,), generator=g)
    per = lambda p, xb, yb: F.cross_entropy(functional_call(model, p, (xb,)), yb, reduction="none")  # noqa: E731
    anchor = {k: v + 0.1 for k, v in params.items()}
    aux = {"scale": torch.tensor([0.5, 1.0, 2.0])}  # a per-client hook input
    extra = lambda w, a: a["scale"] * sum(((w[k] - anchor[k]) ** 2).sum() for k in w)  # noqa: E731
    halve = lambda w, grads, a: {k: v * 0.5 for k, v in grads.items()}  # noqa: E731
    cfg = SGDConfig(lr=0.05, batch_size=4, epochs=1, momentum=0.5)
    clients = [torch.arange(0, 9), torch.arange(9, 30), torch.arange(30, 45)]
    jobs = [PackJob(i, i, client_batches(idx, cfg, torch.Generator().manual_seed(i))) for i, idx in enumerate(clients)]
    batched = BatchedModel(model.batched_forward, lambda o, t: F.cross_entropy(o, t, reduction="none"))
    hooks = PackHooks(extra_loss=extra, grad_correction=halve)
    out, _ = PackSGD(per, x, y, slots=2, batched=batched).run(params, set(), jobs, 3, cfg, hooks, aux)
    serial = LocalSGD(lambda p, xb, yb: per(p, xb, yb).mean(), x, y, "t")
    for i, idx in enumerate(clients):
        mine = {"scale": aux["scale"][i]}
        ref, _ = serial.run(params, idx, cfg, torch.Generator().manual_seed(i), extra_loss=extra,
                            grad_correction=halve, aux=mine)
        for k in params:
            torch.testing.assert_close(out[k][i], ref[k], rtol=1e-4, atol=1e-6)
