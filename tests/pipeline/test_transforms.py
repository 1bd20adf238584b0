"""Upload transforms and their wire codecs against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.attacks import SignFlip, ThreatModel
from fedloom.pipeline.chain import UploadPipeline
from fedloom.pipeline.context import TransformContext
from fedloom.pipeline.transforms import Clip, Gaussian, Quantize, TopK
from fedloom.pipeline.wire import Compact, flatten

CTX = TransformContext(seed=1, round=3, client_id=2)


def test_clip_bounds_every_norm_and_keeps_small_updates() -> None:
    big = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0])}  # norm 5
    clipped, _ = Clip(norm=1.0).apply(CTX, big, None)
    assert torch.allclose(clipped["a"], torch.tensor([0.6, 0.8]))
    small = {"a": torch.tensor([0.3, 0.4])}
    assert Clip(norm=1.0).apply(CTX, small, None)[0] is small
    for seed in range(20):
        u = {"x": torch.randn(50, generator=torch.Generator().manual_seed(seed)) * 10}
        assert torch.linalg.vector_norm(Clip(norm=2.0).apply(CTX, u, None)[0]["x"]) <= 2.0 + 1e-5


def test_topk_keeps_exactly_k_and_carries_the_residual() -> None:
    topk = TopK(ratio=0.5)
    upload = {"w": torch.tensor([1.0, -5.0, 2.0, 0.5])}
    sent, residual = topk.apply(CTX, upload, None)
    assert sent["w"].tolist() == [0.0, -5.0, 2.0, 0.0] and residual["w"].tolist() == [1.0, 0.0, 0.0, 0.5]
    # next round: residual is added before selecting
    sent2, residual2 = topk.apply(CTX, {"w": torch.tensor([0.5, 0.0, 0.0, 0.6])}, residual)
    assert sent2["w"].tolist() == pytest.approx([1.5, 0.0, 0.0, 1.1]) and not residual2["w"].any()


def test_topk_wire_form_is_indices_and_values() -> None:
    pipe = UploadPipeline(seed=1, transforms=(("topk", TopK(ratio=0.1)),))
    upload = {"w": torch.randn(1000)}
    tree, nbytes, states = pipe.finish(0, 1, upload, {})
    assert int((tree["w"] != 0).sum()) == 100
    assert nbytes == 100 * 4 + 100 * 4 + 4  # int32 indices, float32 values, the shape
    assert "topk" in states


def test_quantize_is_unbiased_and_a_quarter_of_float32() -> None:
    pipe = UploadPipeline(seed=7, transforms=(("quantize", Quantize()),))
    x = torch.linspace(-1, 1, 4096)
    mean = torch.zeros_like(x)
    rounds = 200
    for r in range(rounds):
        tree, nbytes, _ = pipe.finish(0, r, {"x": x}, {})
        mean += tree["x"] / rounds
    step = 2 / 255
    assert (mean - x).abs().mean() < 0.05 * step  # unbiased: the average converges to x
    assert (tree["x"] - x).abs().max() <= step + 1e-6  # one grid step at most
    assert nbytes == 4096 + 8  # one byte per value + lo and scale


def test_topk_then_quantize_composes_codecs() -> None:
    pipe = UploadPipeline(seed=1, transforms=(("topk", TopK(ratio=0.25)), ("quantize", Quantize())))
    _, nbytes, _ = pipe.finish(0, 1, {"w": torch.randn(400)}, {})
    assert nbytes == 100 * 4 + 100 * 1 + 8 + 4  # int32 indices, uint8 values, lo+scale, shape


def test_each_steps_bytes_are_the_message_if_the_chain_stopped_there() -> None:
    pipe = UploadPipeline(seed=1, transforms=(("clip", Clip(norm=1.0)), ("topk", TopK(ratio=0.25)),
                                              ("quantize", Quantize())))
    stages: dict[str, float] = {}
    _, nbytes, _ = pipe.finish(0, 1, {"w": torch.randn(400)}, {}, stages)
    assert list(stages) == ["bytes_up_after_clip", "bytes_up_after_topk", "bytes_up_after_quantize"]
    assert stages["bytes_up_after_clip"] == 400 * 4  # dense float32 until the first codec
    assert stages["bytes_up_after_topk"] == 100 * 4 + 100 * 4 + 4
    assert stages["bytes_up_after_quantize"] == nbytes == 100 * 4 + 100 * 1 + 8 + 4


def test_gaussian_noise_is_scaled_to_the_clip_norm_and_seeded() -> None:
    pipe = UploadPipeline(seed=1, transforms=(("clip", Clip(norm=2.0)), ("gaussian", Gaussian(multiplier=0.5))))
    zero = {"w": torch.zeros(20000)}
    a, _, _ = pipe.finish(0, 1, zero, {})
    b, _, _ = pipe.finish(0, 1, zero, {})
    c, _, _ = pipe.finish(1, 1, zero, {})
    assert torch.equal(a["w"], b["w"]) and not torch.equal(a["w"], c["w"])
    assert a["w"].std().item() == pytest.approx(1.0, rel=0.03)  # 0.5 * 2
    with pytest.raises(ConfigError, match="needs 'clip' before it"):
        Gaussian().check_chain([])


def test_signflip_only_touches_malicious_clients() -> None:
    pipe = UploadPipeline(seed=1, attack=SignFlip(scale=2.0), malicious=frozenset({1}))
    honest, _, _ = pipe.finish(0, 1, {"w": torch.ones(3)}, {})
    evil, _, _ = pipe.finish(1, 1, {"w": torch.ones(3)}, {})
    assert honest["w"].tolist() == [1.0] * 3 and evil["w"].tolist() == [-2.0] * 3


def test_malicious_ids_are_fixed_by_the_seed() -> None:
    threat = ThreatModel(fraction=0.2)
    assert threat.malicious_clients(1, 50) == threat.malicious_clients(1, 50)
    assert len(threat.malicious_clients(1, 50)) == 10
    assert threat.malicious_clients(1, 50) != threat.malicious_clients(2, 50)


def test_a_compact_message_is_counted_by_its_arrays() -> None:
    """FedKSeed-style: 3 seed indices (int16) and 3 projected gradients (float32) decode to a full update."""
    seeds, grads = torch.tensor([4, 17, 9], dtype=torch.int16), torch.tensor([0.1, -0.2, 0.3])

    def replay(arrays: dict) -> dict:
        update = torch.zeros(10_000)
        for s, g in zip(arrays["seeds"].tolist(), arrays["grads"].tolist()):
            update += g * torch.randn(10_000, generator=torch.Generator().manual_seed(s))
        return {"w": update}

    message = Compact({"seeds": seeds, "grads": grads}, replay)
    tree, nbytes, _ = UploadPipeline().finish(0, 1, message, {})
    assert nbytes == 3 * 2 + 3 * 4 and tree["w"].shape == (10_000,)


def test_stateful_transforms_keep_their_state_beside_the_algorithms() -> None:
    pipe = UploadPipeline(transforms=(("topk", TopK()),))
    stored = pipe.join({"personal": torch.ones(2)}, {"topk": {"w": torch.zeros(2)}})
    state, tstates = pipe.split(stored)
    assert torch.equal(state["personal"], torch.ones(2)) and "topk" in tstates
    assert pipe.split(pipe.join(None, {}))== (None, {})


def test_flatten_names_nested_trees() -> None:
    assert set(flatten({"a": {"b": torch.zeros(1)}, "c": torch.zeros(2)})) == {"a/b", "c"}


def test_a_broadcast_declaring_a_wire_form_is_counted_by_it() -> None:
    """FedKSeed-style download: K accumulated scalars stand for the whole model the client rebuilds."""
    from fedloom.algorithms.base import Broadcast

    model = {"w": torch.zeros(100_000)}
    scalars = Compact({"grads": torch.zeros(4096)}, lambda arrays: model)
    assert Broadcast(params=model).nbytes(0) == 400_000
    assert Broadcast(params=model, wire=scalars).nbytes(0) == 4096 * 4
    personal = Broadcast(params=model, personal={0: {"h": torch.zeros(10)}}, wire=scalars)
    assert personal.nbytes(0) == 4096 * 4 + 40 and personal.for_client(0).wire is scalars
