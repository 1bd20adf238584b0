"""The prototype family (FedProto, FedTGP, FD, FedGH) packed on the vectorized engine: the same results as the
serial engine, with no fallback; and the pack's pieces they rest on checked against the serial context one
client at a time: the class-statistics pass (``ctx.class_sums``), the carry threaded through local SGD
(``ctx.local_sgd_carry``, PFLlib's prototypes collected during training) and per-client wire messages."""

from __future__ import annotations

import functools

import pytest
import torch

from fedloom.algorithms import _htfl as H
from fedloom.engines.context import ClientContext
from fedloom.engines.pack_context import PackContext, PerClient
from fedloom.pipeline.wire import Compact

from engine_equivalence import assert_vectorized_matches_serial
from helpers import make_experiment
from htfl_helpers import MIXED_MODELS

PACKED = [("fedproto", {}), ("fedproto", {"pfllib_compat": True}),
          ("fedtgp", {"server_epochs": 5}), ("fedtgp", {"server_epochs": 5, "pfllib_compat": True}),
          ("fd", {}), ("fd", {"target": "raw"}), ("fedgh", {})]
#: clients of the small digits experiment (seed 3, Dirichlet 0.5) with different sample counts and classes
#: (274, 207 and 254 samples; client 2 lacks classes 1 and 3, client 3 lacks six classes)
UNEVEN = [0, 2, 3]


@pytest.mark.parametrize("algorithm, hyper", PACKED, ids=[f"{a}-{'-'.join(map(str, h.values())) or 'default'}"
                                                          for a, h in PACKED])
def test_vectorized_packs_and_matches_serial(algorithm: str, hyper: dict) -> None:
    assert_vectorized_matches_serial(algorithm=algorithm, options={algorithm: hyper}, clients=6, join_ratio=0.9,
                                     rounds=2)


@pytest.mark.parametrize("pfllib_compat", [False, True])
def test_vectorized_matches_serial_on_a_mixed_federation(pfllib_compat: bool) -> None:
    """Packs of one architecture each (MLP, logistic regression), the prototypes averaged across them."""
    assert_vectorized_matches_serial(algorithm="fedproto", model="mlp,logreg", clients=6, rounds=2,
                                     options={"fedproto": {"pfllib_compat": pfllib_compat}, **MIXED_MODELS})


def trained_pack(ctx: PackContext) -> dict:
    """Different parameters per client, so that a pass mixing clients up would show."""
    gen = torch.Generator().manual_seed(0)
    return {k: v + 0.1 * torch.randn(ctx.n, *v.shape, generator=gen) for k, v in ctx.init_params.items()}


def test_packed_class_sums_equal_each_clients_serial_pass() -> None:
    exp = make_experiment(clients=6)
    runtime = exp.runtime
    pack = PackContext(runtime, UNEVEN, 1, slots=2)
    params = trained_pack(pack)
    features = functools.partial(H.body, runtime.apply)
    sums, counts = pack.class_sums(params, features, 10, batch_size=64)  # 5, 4 and 4 batches, the last partial
    assert sums.shape == (3, 10, runtime.model.feature_dim) and counts.shape == (3, 10)
    for position, client in enumerate(UNEVEN):
        serial = ClientContext(runtime, client, 1)
        own = {k: v[position] for k, v in params.items()}
        want_sums, want_counts = serial.class_sums(own, features, 10, batch_size=64)
        assert torch.equal(counts[position], want_counts)
        assert torch.allclose(sums[position], want_sums, rtol=1e-5, atol=1e-4)
        assert torch.equal(want_counts, serial.train_label_counts())
    means, present = H.class_means(pack, params, features, H.num_classes(pack))
    assert means.shape == sums.shape and torch.equal(present, counts > 0) and not present.all()


def test_packed_carry_is_each_clients_own_over_its_own_batches() -> None:
    """PFLlib's prototypes collected during training: every client's per-class feature sums and counts over its
    own batches (the padding of a partial batch left out), and the same trained parameters."""
    exp = make_experiment(clients=6)
    runtime = exp.runtime
    pack = PackContext(runtime, UNEVEN, 1, slots=2)  # 2 slots for 3 clients: a slot is refilled
    width = runtime.model.feature_dim
    table, present = torch.randn(10, width), torch.arange(10) % 3 > 0
    loss = H.proto_collecting_loss(runtime.apply, table, present, 1.0)
    carry = {"sum": torch.zeros(10, width, dtype=torch.float64), "count": torch.zeros(10, dtype=torch.long)}
    trained, collected, metrics = pack.local_sgd_carry(runtime.init_params, carry, loss)
    assert "carry" not in metrics and collected["sum"].shape == (3, 10, width)
    for position, client in enumerate(UNEVEN):
        serial = ClientContext(runtime, client, 1)
        want_params, want, _ = serial.local_sgd_carry(runtime.init_params, carry, loss)
        assert torch.equal(collected["count"][position], serial.train_label_counts().long())
        assert torch.equal(collected["count"][position], want["count"])
        assert torch.allclose(collected["sum"][position], want["sum"], rtol=1e-5, atol=1e-4)
        for name, value in want_params.items():
            assert torch.allclose(trained[name][position], value, atol=1e-5)


def test_each_client_gives_per_client_messages() -> None:
    exp = make_experiment(clients=6)
    pack = PackContext(exp.runtime, UNEVEN, 1, slots=2)
    present = exp.runtime.client_context(0, 1).train_label_counts() > 0
    held = torch.stack([pack.train_label_counts()[i] > 0 for i in range(3)])
    table = torch.randn(3, 10, 4)
    upload = H.rows_upload(pack, table, held)
    assert isinstance(upload, PerClient) and len(upload.values) == 3
    for position in range(3):
        message = upload[position]
        assert isinstance(message, Compact)
        assert message.arrays["rows"].shape == (int(held[position].sum()), 4)
        assert torch.equal(message.decode()["sum"][held[position]], table[position][held[position]])
    assert torch.equal(held[0], present)
