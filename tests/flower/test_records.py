"""Wire forms as Flower records round-trip through Flower's protobuf serialization, and the bytes counted from
what arrived are fedloom's own count (dense trees, top-k's compact payload)."""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import RecordDict  # noqa: E402

from fedloom.flower import records  # noqa: E402
from fedloom.flower.local import over_the_wire  # noqa: E402
from fedloom.flower.node import encode_upload  # noqa: E402
from fedloom.pipeline.chain import UploadPipeline  # noqa: E402
from fedloom.pipeline.transforms import TRANSFORMS  # noqa: E402
from fedloom.pipeline.wire import Compact, payload_bytes  # noqa: E402
from fedloom.algorithms.tree import tree_bytes  # noqa: E402


def _tree() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"body.w": torch.randn(4, 5, generator=g), "head": {"b": torch.randn(3, generator=g)},
            "count": torch.tensor([7], dtype=torch.int64), "note": None}


def test_tree_round_trip_and_bytes() -> None:
    content = RecordDict()
    records.put_tree(content, "params", _tree())
    arrived, _ = over_the_wire(content)
    back = records.get_tree(arrived, "params")
    want = _tree()
    assert back["note"] is None
    for key in ("body.w", "count"):
        assert torch.equal(back[key], want[key]) and back[key].dtype == want[key].dtype
    assert torch.equal(back["head"]["b"], want["head"]["b"])
    assert records.wire_bytes(arrived) == tree_bytes({k: v for k, v in want.items() if v is not None})


def _halve(arrays: dict, scale: float) -> dict:
    return {"x": arrays["x"].float() * scale}


def test_compact_travels_compact() -> None:
    message = Compact({"x": torch.arange(5, dtype=torch.int16)}, functools.partial(_halve, scale=0.5))
    content = RecordDict()
    records.put_value(content, "up.0", message)
    arrived, _ = over_the_wire(content)
    got = records.get_value(arrived, "up.0")
    assert isinstance(got, Compact)
    assert records.wire_bytes(arrived) == message.nbytes() == 10  # five int16, not the decoded float tree
    assert torch.equal(got.decode()["x"], torch.arange(5).float() * 0.5)


def test_topk_upload_crosses_as_its_payload() -> None:
    """The node encodes with the pipeline's codec, the server decodes: same tree, same bytes as fedloom's own
    finishing step (which encodes and decodes in one place)."""
    topk = TRANSFORMS.get("topk")(ratio=0.1)
    pipeline = UploadPipeline(seed=1, transforms=(("topk", topk),))
    upload = {"body.w": torch.randn(8, 8, generator=torch.Generator().manual_seed(2)),
              "head.b": torch.randn(4, generator=torch.Generator().manual_seed(3))}
    want, want_bytes, _ = pipeline.finish(5, 1, upload, {})
    message, _ = encode_upload(pipeline, 5, 1, upload, {})
    assert isinstance(message, Compact)
    content = RecordDict()
    records.put_value(content, "up.5", message)
    arrived, _ = over_the_wire(content)
    got = records.get_value(arrived, "up.5").decode()
    assert records.wire_bytes(arrived) == want_bytes == payload_bytes(message.arrays)
    assert want_bytes < tree_bytes(upload) / 2
    for key in want:
        assert torch.equal(got[key], want[key])
