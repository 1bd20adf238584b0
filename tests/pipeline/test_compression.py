"""Compressors: bytes counted from the encoded payload (checked against hand formulas), the codecs' round trip,
error feedback carried over rounds, unbiasedness where claimed, majority vote, and bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.build import build_transforms
from fedloom.pipeline.chain import UploadPipeline
from fedloom.pipeline.compression import EFSignSGD, MajorityVote, PowerSGD, QSGD, RandK, SignSGD
from fedloom.pipeline.context import TransformContext
from fedloom.pipeline.transforms import Quantize, TopK
from fedloom.pipeline.wire import flatten, payload_bytes
from fedloom.run import initial_round, step_round

from helpers import make_experiment

CTX = TransformContext(seed=1, round=3, client_id=2)


def upload(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(20, 30, generator=gen), "b": torch.randn(30, generator=gen)}


def finish(transform, tree, state=None, round_=1):
    pipe = UploadPipeline(seed=1, transforms=(("t", transform),))
    return pipe.finish(2, round_, tree, {} if state is None else {"t": state})


@pytest.mark.parametrize("transform, expected", [
    # k values (float32) + one int64 seed + the int32 shape, per tensor: w 600 → k 60, b 30 → k 3
    (RandK(ratio=0.1), (60 * 4 + 8 + 2 * 4) + (3 * 4 + 8 + 4)),
    # per tensor: a float32 norm per bucket, 1 sign bit and 4 level bits (s = 15) per value, the shape
    (QSGD(levels=15, bucket=512), (2 * 4 + 75 + 300 + 8) + (4 + 4 + 15 + 4)),
    (SignSGD(), (75 + 8) + (4 + 4)),  # one bit per value + the shape
    (EFSignSGD(), (4 + 75 + 8) + (4 + 4 + 4)),  # + one float32 scale per tensor
    (PowerSGD(rank=2), (20 * 2 + 30 * 2) * 4 + 8 + 30 * 4),  # P and Q of the matrix; the vector goes dense
    (Quantize(bits=4), (300 + 8 + 8) + (15 + 8 + 4)),  # two 4-bit codes per byte, lo and scale, the shape
])
def test_every_compressors_bytes_are_its_encoded_payloads(transform, expected) -> None:
    tree, state = upload(), None
    if transform.stateful or type(transform) is SignSGD:
        tree, state = transform.apply(CTX, upload(), None)
    payload = flatten(tree)
    for _ in [transform] if transform.has_codec else []:
        payload = transform.encode(payload, CTX)
    assert payload_bytes(payload) == expected
    _, nbytes, _ = finish(transform, upload())
    assert nbytes == expected


def test_chained_codecs_count_the_last_encoding() -> None:
    pipe = UploadPipeline(seed=1, transforms=(("topk", TopK(ratio=0.25)), ("qsgd", QSGD(levels=3, bucket=100))))
    tree, nbytes, _ = pipe.finish(0, 1, {"w": torch.randn(400)}, {})
    # topk: 100 int32 indices + the shape; qsgd of the 100 values: one norm, 100 sign bits, 100 2-bit levels, shape
    assert nbytes == 100 * 4 + 4 + (4 + 13 + 25 + 4) and int((tree["w"] != 0).sum()) <= 100


@pytest.mark.parametrize("transform", [RandK(ratio=0.2), SignSGD(scale=0.5), EFSignSGD(), PowerSGD(rank=3),
                                       RandK(ratio=0.3, error_feedback=False)])
def test_the_server_receives_exactly_what_apply_produced(transform) -> None:
    sent, _ = transform.apply(CTX, upload(), None)
    received, _, _ = UploadPipeline(seed=1, transforms=(("t", transform),)).finish(2, 3, upload(), {})
    for name in sent:
        assert torch.allclose(received[name], sent[name], atol=1e-5)


def test_randk_error_feedback_carries_the_unsent_rest() -> None:
    randk = RandK(ratio=0.25)
    x = upload()
    sent, residual = randk.apply(CTX, x, None)
    assert int((sent["w"] != 0).sum()) == 150 and torch.allclose(sent["w"] + residual["w"], x["w"])
    later = TransformContext(seed=1, round=4, client_id=2)
    sent2, residual2 = randk.apply(later, x, residual)
    assert torch.allclose(sent2["w"] + residual2["w"], x["w"] + residual["w"])  # the residual was added
    assert not torch.equal(sent2["w"] != 0, sent["w"] != 0)  # a fresh mask each round


def test_ef_signsgd_sends_the_mean_magnitude_and_keeps_the_error() -> None:
    x = {"v": torch.tensor([3.0, -1.0, 0.0, -4.0])}
    sent, e = EFSignSGD().apply(CTX, x, None)
    assert sent["v"].tolist() == [2.0, -2.0, 2.0, -2.0]  # ‖p‖₁/d = 2
    assert e["v"].tolist() == [1.0, 1.0, -2.0, -2.0]
    sent2, _ = EFSignSGD().apply(CTX, {"v": torch.zeros(4)}, e)
    assert sent2["v"].tolist() == [1.5, 1.5, -1.5, -1.5]  # the error alone is sent next round


def test_powersgd_recovers_a_low_rank_update_and_keeps_its_factor() -> None:
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(12, 1, generator=gen) @ torch.randn(1, 9, generator=gen)  # rank 1
    sent, state = PowerSGD(rank=1).apply(CTX, {"m": m}, None)
    assert torch.allclose(sent["m"], m, atol=1e-5) and state["e"]["m"].abs().max() < 1e-5
    full = torch.randn(12, 9, generator=gen)
    sent, state = PowerSGD(rank=2).apply(CTX, {"m": full}, None)
    assert torch.linalg.matrix_rank(sent["m"]) == 2 and torch.allclose(sent["m"] + state["e"]["m"], full, atol=1e-5)
    assert state["q"]["m"].shape == (9, 2)
    _, state2 = PowerSGD(rank=2).apply(CTX, {"m": torch.zeros(12, 9)}, state)
    assert state2["e"]["m"].abs().sum() < state["e"]["m"].abs().sum()  # the carried error was partly sent


def test_qsgd_is_unbiased_and_randk_without_feedback_too() -> None:
    x = {"v": torch.linspace(-1, 2, 64)}
    for transform in (QSGD(levels=2, bucket=16), RandK(ratio=0.5, error_feedback=False)):
        mean = torch.zeros(64)
        for r in range(1000):
            got, _, _ = finish(transform, x, round_=r)
            mean += got["v"] / 1000
        assert (mean - x["v"]).abs().mean() < 0.05, type(transform).__name__
        assert (got["v"] - x["v"]).abs().mean() > 0.2  # one draw is far off: the average did the work


def test_majority_vote_steps_by_the_sign_of_the_vote() -> None:
    items = [(0, {"w": torch.tensor([1.0, -1.0, 1.0, 1.0])}, 5.0), (1, {"w": torch.tensor([1.0, -1.0, -1.0, -1.0])}, 1.0),
             (2, {"w": torch.tensor([-1.0, -1.0, -1.0, 1.0])}, 1.0)]
    assert MajorityVote(step=0.1).aggregate(items)["w"].tolist() == pytest.approx([0.1, -0.1, -0.1, 0.1])


@pytest.mark.parametrize("spec, options, message", [
    ("randk", {"ratio": 0}, r"randk.ratio must be in \(0, 1\], got 0"),
    ("randk", {"ratio": 1.5}, r"randk.ratio must be in \(0, 1\], got 1.5"),
    ("topk", {"ratio": 0.0}, r"topk.ratio must be in \(0, 1\]"),
    ("qsgd", {"levels": 0}, r"qsgd.levels must be in \[1, 255\], got 0"),
    ("powersgd", {"rank": 0}, "powersgd.rank must be >= 1"),
])
def test_bad_compressor_options_are_one_clear_error(spec, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_transforms(SimpleNamespace(transform=spec, options={spec: options}))


def test_signsgd_with_majority_vote_runs_and_counts_one_bit_per_value() -> None:
    exp = make_experiment(clients=3, transform="signsgd", aggregator="majority-vote",
                          options={"majority-vote": {"step": 0.001}})
    server, _, _ = initial_round(exp)
    out = step_round(exp, server, 1, {})
    sizes = [p.numel() for p in exp.runtime.init_params.values() if isinstance(p, torch.Tensor)]
    dims = [p.dim() for p in exp.runtime.init_params.values() if isinstance(p, torch.Tensor)]
    per_client = sum(math.ceil(n / 8) + 4 * d for n, d in zip(sizes, dims))
    assert out.record["bytes_up"] == 3 * per_client
