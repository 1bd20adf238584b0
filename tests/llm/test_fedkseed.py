"""FedKSeed / FedKSeed-Pro / FedAvg-ZO: the estimator, seed replay, the server's accumulation, Pro's
probabilities and the byte counts, on small real models (digits MLP) and on a quadratic. No transformers needed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from fedloom.algorithms._zo import (ZOSettings, apply_seed, candidate_seeds, directions, minibatches, replay,
                                    two_point, zo_steps)
from fedloom.algorithms.base import Federation
from fedloom.algorithms.fedkseed import (FedKSeed, FedKSeedPro, decode_upload, pro_probabilities, rebuild,
                                         upload_message)
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.cli import main
from fedloom.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from helpers import make_experiment  # noqa: E402


def federation(exp) -> Federation:
    return Federation(exp.data.num_clients, tuple(int(i.numel()) for i in exp.data.train_idx))


def quadratic(h: torch.Tensor, b: torch.Tensor):
    return lambda p: 0.5 * p["w"] @ h @ p["w"] + b @ p["w"]


def test_two_point_estimate_is_the_directional_derivative_on_a_quadratic() -> None:
    # on L(w) = ½wᵀHw + bᵀw the central difference is exact: (L(w+εz) − L(w−εz)) / 2ε = zᵀ(Hw + b)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    h, b = a @ a.T, torch.randn(5, generator=gen, dtype=torch.float64)
    w = {"w": torch.randn(5, generator=gen, dtype=torch.float64)}
    probe = {"w": w["w"].clone()}
    plus, minus = two_point(w, probe, ["w"], seed=123, eps=1e-3, loss=quadratic(h, b))
    z = dict(directions(w, ["w"], 123))["w"]
    assert (plus - minus) / 2e-3 == pytest.approx(float(z @ (h @ w["w"] + b)), rel=1e-9)
    # and finite differences with a smaller ε agree (the estimate is a derivative, not a loss difference)
    plus2, minus2 = two_point(w, probe, ["w"], seed=123, eps=1e-5, loss=quadratic(h, b))
    assert (plus2 - minus2) / 2e-5 == pytest.approx((plus - minus) / 2e-3, rel=1e-6)


def test_seed_averaged_estimate_is_unbiased_for_the_gradient() -> None:
    # E[ĝ z] = E[z zᵀ] ∇L = ∇L = w for L = ½‖w‖²
    w = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)}
    probe = {"w": w["w"].clone()}
    total = torch.zeros(3, dtype=torch.float64)
    for seed in range(1, 4001):
        plus, minus = two_point(w, probe, ["w"], seed, 1e-3, lambda p: 0.5 * (p["w"] ** 2).sum())
        total += (plus - minus) / 2e-3 * dict(directions(w, ["w"], seed))["w"]
    assert torch.allclose(total / 4000, w["w"], atol=0.15)


def test_same_seed_same_direction_and_the_probe_leaves_the_weights_untouched() -> None:
    w = {"a": torch.randn(4, 3), "b": torch.randn(3)}
    first = dict(directions(w, ["a", "b"], 77))
    again = dict(directions(w, ["a", "b"], 77))
    assert all(torch.equal(first[n], again[n]) for n in first)
    before = {n: t.clone() for n, t in w.items()}
    two_point(w, {n: t.clone() for n, t in w.items()}, ["a", "b"], 77, 1e-3, lambda p: p["a"].sum())
    assert all(torch.equal(before[n], w[n]) for n in w)


def test_replaying_the_upload_rebuilds_the_trained_model_bitwise() -> None:
    exp = make_experiment()
    ctx = exp.runtime.client_context(0, 1)
    start = {n: t.clone() for n, t in exp.runtime.init_params.items()}
    seeds = candidate_seeds(3, 64).tolist()
    batches = minibatches(ctx.train_indices, 4, 30, torch.Generator().manual_seed(1))
    losses = [lambda p, b=b: ctx.mean_loss(p, b) for b in batches]
    trained = {n: t.clone() for n, t in start.items()}
    trace = zo_steps(trained, seeds, [i % 64 for i in range(30)], losses, ZOSettings(lr=1e-2, eps=1e-3))
    assert len(trace.grads) == 30 and trace.skipped == 0
    rebuilt = replay(start, [seeds[p] for p in trace.positions], trace.grads, lr=1e-2)
    assert all(torch.equal(rebuilt[n], trained[n]) for n in trained)
    assert not all(torch.equal(start[n], trained[n]) for n in trained)  # it did train


def test_a_round_of_one_client_equals_its_own_trajectory() -> None:
    # the server's w0 − η Σ_j A_j z_j equals the client's ZO trajectory (FedAvg of one client)
    exp = make_experiment()
    algo = FedKSeed(k=16, steps=20, lr=1e-2, eps=1e-3, batch_size=4)
    server = algo.init_server(exp.runtime.init_params, federation(exp))
    result = algo.client_update(exp.runtime.client_context(1, 1), server.broadcast, None)
    assert result.state is None  # a client keeps no model between rounds
    arrays = result.upload.arrays
    seeds = server.state.extra["seeds"]
    trajectory = replay(server.broadcast.params, seeds[arrays["seeds"].long()].tolist(), arrays["grads"].tolist(),
                        1e-2)
    acc = UploadAccumulator()
    acc.add(1, result.upload.decode(), result.weight)
    after = algo.server_update(server.state, acc.finish())
    for name, value in trajectory.items():
        assert torch.allclose(after.state.params[name], value, atol=1e-6)
    assert torch.equal(after.broadcast.extra["scalars"], result.upload.decode()["scalars"])


def test_accumulation_is_order_independent_and_matches_the_rebuild_from_w0() -> None:
    exp = make_experiment()
    algo = FedKSeed(k=8, steps=10, lr=1e-2, eps=1e-3, batch_size=4, replay="client")
    server = algo.init_server(exp.runtime.init_params, federation(exp))
    results = {c: algo.client_update(exp.runtime.client_context(c, 1), server.broadcast, None) for c in range(3)}
    states = []
    for order in ([0, 1, 2], [2, 0, 1]):
        acc = UploadAccumulator()
        for c in order:
            acc.add(c, results[c].upload.decode(), results[c].weight)
        states.append(algo.server_update(server.state, acc.finish()).state)
    assert torch.allclose(states[0].extra["scalars"], states[1].extra["scalars"], rtol=0, atol=1e-7)
    # hand-computed: A = Σ ω_i a_i / Σ ω_i
    weights = torch.tensor([results[c].weight for c in range(3)], dtype=torch.float64)
    pools = torch.stack([results[c].upload.decode()["scalars"].double() for c in range(3)])
    assert torch.allclose(states[0].extra["scalars"].double(), (weights[:, None] * pools).sum(0) / weights.sum(),
                          atol=1e-6)
    # a client (replay = "client") rebuilds the same model from w0 and the K scalars
    from_w0 = rebuild(exp.runtime.init_params, states[0].extra["seeds"], states[0].extra["scalars"], 1e-2)
    assert all(torch.allclose(from_w0[n], states[0].params[n], atol=1e-6) for n in from_w0)


def test_pro_probabilities_follow_the_rule() -> None:
    # importance = Σ|ĝ| / (count + 1) (history starts as [0]) = [0, 1, 2] → min-max [0, .5, 1] → softmax
    p = pro_probabilities(torch.tensor([0.0, 2.0, 4.0]), torch.tensor([0.0, 1.0, 1.0]))
    expected = torch.softmax(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), 0).float()
    assert torch.allclose(p, expected, atol=1e-6)
    uniform = pro_probabilities(torch.zeros(5), torch.zeros(5))
    assert torch.allclose(uniform, torch.full((5,), 0.2))
    skew = pro_probabilities(torch.rand(100) * 50, torch.randint(0, 9, (100,)).float())
    assert float(skew.max() / skew.min()) <= math.e + 1e-5


def test_pro_history_is_clipped_and_counted_once_per_step() -> None:
    message = upload_message(_trace([1, 1, 3], [2.0, -5000.0, 0.5]), k=4, weight=10.0, history=True)
    tree = message.decode()
    assert torch.equal(tree["scalars"], torch.tensor([0.0, -4998.0, 0.0, 0.5]))
    assert torch.allclose(tree["abs_sum"] * 10, torch.tensor([0.0, 1002.0, 0.0, 0.5]))  # |−5000| clipped to 1000
    assert torch.allclose(tree["count"] * 10, torch.tensor([0.0, 2.0, 0.0, 1.0]))


def test_pro_clients_draw_seeds_with_the_server_probabilities() -> None:
    exp = make_experiment()
    algo = FedKSeedPro(k=4, steps=4000)
    broadcast = algo.init_server(exp.runtime.init_params, federation(exp)).broadcast
    broadcast.extra["probs"] = torch.tensor([0.7, 0.1, 0.1, 0.1])
    positions = algo.seed_positions(exp.runtime.client_context(0, 1), broadcast)
    share = torch.bincount(positions, minlength=4).float() / 4000
    assert abs(float(share[0]) - 0.7) < 0.03
    uniform = FedKSeed(k=4, steps=4000).seed_positions(exp.runtime.client_context(0, 1), broadcast)
    assert abs(float((uniform == 0).float().mean()) - 0.25) < 0.03


def _trace(positions, grads):
    from fedloom.algorithms._zo import ZOTrace
    return ZOTrace(positions=list(positions), grads=list(grads))


def test_upload_bytes_are_steps_times_index_plus_scalar_and_a_round_is_under_18_kb() -> None:
    steps, k = 200, 4096
    up = upload_message(_trace(range(steps), [0.1] * steps), k, 1.0, history=False)
    assert up.nbytes() == steps * (2 + 4) == 1200  # int16 index + float32 scalar per step
    exp = make_experiment()
    down = FedKSeed(k=k).init_server(exp.runtime.init_params, federation(exp)).broadcast
    assert down.nbytes(0) == k * 4 == 16384
    assert up.nbytes() + down.nbytes(0) == 17584 <= 18000
    assert decode_upload(up.arrays, k, 1.0, False)["scalars"].shape == (k,)


def test_run_metrics_report_the_actual_message_bytes(tmp_path: Path) -> None:
    code = main(["run", "--algorithm", "fedkseed", "--dataset", "digits", "--model", "logreg", "--clients", "4",
                 "--rounds", "1", "--join-ratio", "0.5", "--device", "cpu", "--threads", "1", "--quiet",
                 "--fedkseed.steps", "200", "--fedkseed.k", "4096", "--out", str(tmp_path / "run")])
    assert code == 0
    import json
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["bytes_up"] == 2 * 200 * 6 and record["bytes_down"] == 2 * 4096 * 4
    assert (record["bytes_up"] + record["bytes_down"]) / 2 <= 18000  # per client per round


def test_fedavg_zo_uploads_the_full_model(tmp_path: Path) -> None:
    code = main(["run", "--algorithm", "fedavg-zo", "--dataset", "digits", "--model", "logreg", "--clients", "4",
                 "--rounds", "1", "--join-ratio", "0.5", "--device", "cpu", "--threads", "1", "--quiet",
                 "--fedavg-zo.steps", "5", "--out", str(tmp_path / "run")])
    assert code == 0
    import json
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["bytes_up"] == 2 * (64 * 10 + 10) * 4  # logreg on digits: 650 float32 per client


def test_server_step_applies_exactly_the_accumulated_scalars() -> None:
    # hand-computed rebuild: one nonzero scalar a at seed s moves w by −η a z(s)
    w = {"w": torch.zeros(3)}
    out = rebuild(w, torch.tensor([5, 9]), torch.tensor([0.0, 2.0]), lr=0.5)
    z = dict(directions(w, ["w"], 9))["w"]
    assert torch.allclose(out["w"], -z)
    same = {"w": torch.zeros(3)}
    apply_seed(same, ["w"], 9, 1.0)
    assert torch.equal(out["w"], same["w"])


@pytest.mark.parametrize("flag, value", [("fedkseed.k", "0"), ("fedkseed.eps", "0"), ("fedkseed.eps", "-1"),
                                         ("fedkseed.steps", "0"), ("fedkseed.replay", "nobody")])
def test_bad_options_are_one_clear_error_before_training(flag: str, value: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--algorithm", "fedkseed", "--dataset", "digits", "--rounds", "1", "--quiet",
                 f"--{flag}", value, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "run").exists()


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError):
        FedKSeed(k=0).validate()
