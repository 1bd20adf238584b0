"""FedAvgM, FedAdagrad, FedAdam, FedYogi and FedExP: the server step against scalar hand computations on
constructed uploads (two or three rounds, so the moments matter)."""

from __future__ import annotations

import math

import pytest
import torch

from fedloom.algorithms.base import Broadcast, Federation
from fedloom.algorithms.fedadagrad import FedAdagrad
from fedloom.algorithms.fedadam import FedAdam
from fedloom.algorithms.fedavgm import FedAvgM
from fedloom.algorithms.fedexp import FedExP
from fedloom.algorithms.fedyogi import FedYogi

from fedopt_helpers import QuadraticContext, scalar, uploads_of, value

FED = Federation(num_clients=2, train_sizes=(10, 30))
DELTAS = (0.1, -0.2, 0.001)  # the mean client update of three rounds


def run_server(algorithm, deltas=DELTAS):
    server = algorithm.init_server(scalar(1.0), FED)
    thetas = []
    for d in deltas:
        # two clients whose n-weighted mean is d: 0.25 (d + 0.3) + 0.75 (d − 0.1) = d
        uploads = uploads_of([(scalar(d + 0.3), 10.0), (scalar(d - 0.1), 30.0)])
        server = algorithm.server_update(server.state, uploads)
        thetas.append(value(server.state.params))
    return thetas, server


def adaptive_by_hand(second_moment, eta=0.01, beta1=0.9, tau=1e-3) -> list[float]:
    theta, m, v, out = 1.0, 0.0, tau ** 2, []
    for d in DELTAS:
        m = beta1 * m + (1 - beta1) * d
        v = second_moment(v, d)
        theta += eta * m / (math.sqrt(v) + tau)
        out.append(theta)
    return out


def test_fedavgm_server_momentum_by_hand() -> None:
    thetas, server = run_server(FedAvgM(server_lr=0.5, momentum=0.9))
    v1 = 0.1
    v2 = 0.9 * v1 - 0.2
    v3 = 0.9 * v2 + 0.001
    assert thetas == pytest.approx([1 + 0.5 * v1, 1 + 0.5 * (v1 + v2), 1 + 0.5 * (v1 + v2 + v3)], abs=1e-6)
    assert value(server.state.extra["velocity"]) == pytest.approx(v3, abs=1e-6)
    plain, _ = run_server(FedAvgM(server_lr=1.0, momentum=0.0))  # β = 0, η = 1: FedAvg
    assert plain == pytest.approx([1.1, 0.9, 0.901], abs=1e-6)


def test_fedadam_moments_by_hand() -> None:
    # first round: m = 0.01, v = 0.99·1e-6 + 0.01·0.01 = 1.0099e-4, θ = 1 + 0.01·0.01/(√v + 1e-3)
    thetas, server = run_server(FedAdam())
    assert thetas[0] == pytest.approx(1 + 1e-4 / (math.sqrt(1.0099e-4) + 1e-3), abs=1e-7)
    assert thetas == pytest.approx(adaptive_by_hand(lambda v, d: 0.99 * v + 0.01 * d * d), abs=1e-6)
    m = 0.9 * (0.9 * 0.01 + 0.1 * -0.2) + 0.1 * 0.001
    assert value(server.state.extra["m"]) == pytest.approx(m, abs=1e-7)


def test_fedyogi_second_moment_moves_additively_by_hand() -> None:
    def yogi(v, d):
        return v - 0.01 * d * d * math.copysign(1.0, v - d * d)

    thetas, server = run_server(FedYogi())
    assert thetas == pytest.approx(adaptive_by_hand(yogi), abs=1e-6)
    adam_v = value(run_server(FedAdam())[1].state.extra["v"])
    # round 3's tiny Δ: Adam's v decays by 1 %, Yogi's only by (1 − β2)Δ² = 1e-8
    v2 = yogi(yogi(1e-6, 0.1), -0.2)
    assert value(server.state.extra["v"]) == pytest.approx(v2 - 1e-8, rel=1e-5)
    assert value(server.state.extra["v"]) > adam_v


def test_fedadagrad_accumulates_squares_by_hand() -> None:
    thetas, server = run_server(FedAdagrad(server_lr=0.1, beta1=0.5))
    assert thetas == pytest.approx(adaptive_by_hand(lambda v, d: v + d * d, eta=0.1, beta1=0.5), abs=1e-6)
    assert value(server.state.extra["v"]) == pytest.approx(1e-6 + 0.01 + 0.04 + 1e-6, rel=1e-5)


def test_server_optimizers_keep_the_moments_when_nobody_uploads() -> None:
    algorithm = FedAdam()
    _, server = run_server(algorithm, deltas=(0.1,))
    idle = algorithm.server_update(server.state, uploads_of([]))
    assert idle.state.params is server.state.params and idle.state.extra is server.state.extra
    assert idle.state.round == server.state.round + 1


def test_fedexp_extrapolates_by_the_spread_of_the_client_updates() -> None:
    algorithm = FedExP(eps=1e-3)
    server = algorithm.init_server({"w": torch.zeros(2)}, FED)

    def upload(d):
        d = {"w": torch.tensor(d)}
        return {"delta": d, "sq_norm": d["w"].pow(2).sum()}

    apart = algorithm.server_update(server.state, uploads_of([(upload([1.0, 0.0]), 1.0),
                                                              (upload([-0.5, 1.0]), 1.0)]))
    # mean Δ = (0.25, 0.5), ‖mean‖² = 0.3125, mean ‖Δ_i‖² = (1 + 1.25)/2: η_g = 1.125 / (2 (0.3125 + 1e-3))
    eta = 1.125 / (2 * 0.3135)
    assert apart.metrics["eta_g"] == pytest.approx(eta)
    assert apart.state.params["w"].tolist() == pytest.approx([0.25 * eta, 0.5 * eta])
    together = algorithm.server_update(server.state, uploads_of([(upload([1.0, 0.0]), 1.0)] * 2))
    assert together.metrics["eta_g"] == 1.0  # agreeing clients: plain FedAvg (η_g never below 1)
    client = algorithm.client_update(QuadraticContext(target=3.0), Broadcast(scalar(1.0)), None)
    assert float(client.upload["sq_norm"]) == pytest.approx(value(client.upload["delta"]) ** 2)


def test_fedexp_eval_average_evaluates_the_midpoint_of_the_last_two_iterates_and_trains_on_the_last() -> None:
    from fedloom.algorithms.tree import tree_bytes

    def rounds(algorithm):
        server = algorithm.init_server({"w": torch.zeros(2)}, FED)
        out = []
        for d in ([1.0, 0.0], [0.0, 2.0]):  # agreeing clients: η_g = 1, so θ_1 = (1, 0), θ_2 = (1, 2)
            up = {"delta": {"w": torch.tensor(d)}, "sq_norm": torch.tensor(d).pow(2).sum()}
            server = algorithm.server_update(server.state, uploads_of([(up, 1.0)] * 2))
            out.append(server)
        return out

    plain, averaged = rounds(FedExP()), rounds(FedExP(eval_average=True))
    for a, b in zip(plain, averaged):  # training is unchanged: the same iterates, the same bytes sent
        assert a.state.params["w"].tolist() == b.state.params["w"].tolist()
        assert b.broadcast.nbytes(0) == a.broadcast.nbytes(0) == tree_bytes(a.state.params)
    evaluated = [FedExP(eval_average=True).eval_params(None, r.broadcast, None)["w"].tolist() for r in averaged]
    assert evaluated == [[1.0, 0.0], [1.0, 1.0]]  # round 1: θ_1 alone; round 2: (θ_1 + θ_2)/2
    assert FedExP().eval_params(None, plain[1].broadcast, None)["w"].tolist() == [1.0, 2.0]


def test_fedexp_eval_average_is_refused_on_a_real_transport() -> None:
    from fedloom.errors import ConfigError

    FedExP().check_deployable()
    with pytest.raises(ConfigError, match="eval_average"):
        FedExP(eval_average=True).check_deployable()


def test_server_optimizers_take_their_pseudo_gradient_from_the_runs_aggregator() -> None:
    from fedloom.algorithms.uploads import UploadAccumulator
    from fedloom.pipeline.aggregators import Median

    acc = UploadAccumulator(keep_all=True)
    for cid, d in enumerate((0.0, 0.1, 10.0)):  # one outlier
        acc.add(cid, scalar(d), 1.0)
    uploads = acc.finish()
    uploads.aggregator = Median()
    algorithm = FedAvgM(server_lr=1.0, momentum=0.0)
    after = algorithm.server_update(algorithm.init_server(scalar(1.0), FED).state, uploads)
    assert value(after.state.params) == pytest.approx(1.1)  # the median, not the mean 3.37
