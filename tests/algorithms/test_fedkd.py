"""FedKD: the SVD codec keeps the stated energy fraction (and no more singular values than needed), the
schedule T_start → T_end, the mentee as the only (compressed) upload, the mentor learning from the mentee."""

from __future__ import annotations

import pytest
import torch

from fedloom.algorithms.fedkd import compress, kept_rank
from fedloom.algorithms.tree import tree_bytes
from fedloom.pipeline.wire import payload_bytes

from htfl_helpers import mixed, start, train_round


def test_kept_rank_by_hand() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert kept_rank(sigma, 0.6) == 1  # 9/14.25 = 0.632 > 0.6
    assert kept_rank(sigma, 0.9) == 2  # 13/14.25 = 0.912
    assert kept_rank(sigma, 0.95) == 3  # 14/14.25 = 0.982
    assert kept_rank(sigma, 1.0) == 4


@pytest.mark.parametrize("energy", [0.9, 0.95, 0.98])
def test_compression_keeps_the_energy_fraction(energy: float) -> None:
    gen = torch.Generator().manual_seed(0)
    low_rank = torch.randn(40, 6, generator=gen) @ torch.randn(6, 50, generator=gen)
    matrix = low_rank + 0.05 * torch.randn(40, 50, generator=gen)
    message = compress({"w": matrix, "b": torch.ones(40)}, energy)
    k = message.arrays["w/s"].numel()
    sigma = torch.linalg.svdvals(matrix.double())
    share = lambda j: float(sigma[:j].pow(2).sum() / sigma.pow(2).sum())  # noqa: E731
    assert share(k) > energy and share(k - 1) <= energy  # just enough singular values
    recon = message.decode()["mentee"]["w"]
    assert abs(float(recon.double().pow(2).sum() / matrix.double().pow(2).sum()) - share(k)) < 1e-4
    assert message.nbytes() == 4 * (k * (40 + 50 + 1) + 40)
    assert torch.equal(message.decode()["mentee"]["b"], torch.ones(40))


def test_a_full_rank_tensor_goes_dense_when_factors_would_be_larger() -> None:
    message = compress({"w": torch.eye(8)}, 0.95)  # 8 equal singular values: k = 8, factors 8·17 > 64
    assert set(message.arrays) == {"w"} and payload_bytes(message.arrays) == 4 * 64


def test_energy_schedule_and_the_mentee_is_the_only_upload() -> None:
    exp = mixed("fedkd", t_start=0.5, t_end=0.8)
    algo = exp.algorithm
    assert algo.energy(1, 10) == 0.5 and abs(algo.energy(11, 10) - 0.8) < 1e-12
    assert abs(algo.energy(6, 10) - 0.65) < 1e-12
    server0 = start(exp)
    result, server = train_round(exp, server0, 1)
    mentee = exp.runtime.architectures.init_params[0]
    ctx = exp.runtime.client_context(1, 1)
    out = algo.client_update(ctx, server0.broadcast, algo.init_client_state(ctx.init_params, 1))
    assert set(out.upload.decode()["mentee"]) == set(mentee)  # a logistic-regression client sends an MLP mentee
    assert out.upload.nbytes() < tree_bytes(mentee)  # T = 0.5 compresses the trained matrices
    assert server.metrics["energy"] == pytest.approx(0.5)
    assert server.broadcast.wire is not None and server.broadcast.nbytes(0) < tree_bytes(mentee)
    assert set(exp.runtime.store.load(1)["params"]) == set(ctx.init_params)  # the mentor stays home


def test_the_mentor_learns_from_the_mentee() -> None:
    exp = mixed("fedkd")
    ctx = exp.runtime.client_context(1, 1)
    server = start(exp)
    state = exp.algorithm.init_client_state(ctx.init_params, 1)
    a = exp.algorithm.client_update(ctx, server.broadcast, state).state["params"]
    other = type(server.broadcast)(params={k: torch.randn_like(v) for k, v in server.broadcast.params.items()})
    b = exp.algorithm.client_update(ctx, other, state).state["params"]
    assert not all(torch.allclose(a[k], b[k]) for k in a)  # the mentee's outputs and features reach the mentor
