"""FedKSeed's compact broadcast over Flower (Qin et al., ICML 2024): the server sends only the K accumulated
scalars, a node rebuilds the model from them and its own initial weights (also after missed rounds), the bytes
are those of the compact form (under 18 KB per client and round in the paper's setting K = 4096, τ = 200), and a
compact upload stays compact through clip and Gaussian noise."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr")

import fedloom  # noqa: E402
from fedloom.algorithms._zo import candidate_seeds  # noqa: E402
from fedloom.algorithms.base import Federation  # noqa: E402
from fedloom.algorithms.fedkseed import FedKSeed, rebuild  # noqa: E402
from fedloom.algorithms.uploads import Uploads  # noqa: E402
from fedloom.errors import ConfigError  # noqa: E402
from fedloom.flower import client_app, records  # noqa: E402
from fedloom.flower.local import LocalGrid, over_the_wire  # noqa: E402
from fedloom.flower.server import broadcast_content, run_server  # noqa: E402

from tests.flower.helpers import DIGITS, assert_same_metrics, nodes  # noqa: E402

#: the paper's message sizes on a small model (the sizes do not depend on the model)
PAPER = {**DIGITS, "algorithm": "fedkseed", "model": "logreg", "join_ratio": 0.5, "rounds": 2,
         "fedkseed": {"k": 4096, "steps": 200, "lr": 1e-3, "replay": "client"}}


def _params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"body.w": torch.randn(6, 4, generator=g), "head.b": torch.zeros(4)}


def _server_round(algorithm: FedKSeed, server, delta: torch.Tensor):
    return algorithm.server_update(server.state, Uploads({"scalars": delta.double()}, 1.0, 1))


def test_compact_broadcast_round_trip_and_missed_rounds() -> None:
    algorithm, w0 = FedKSeed(k=16, lr=0.1, replay="client"), _params()
    server = algorithm.init_server(w0, Federation(2, (1, 1)))
    g = torch.Generator().manual_seed(2)
    for _ in range(3):  # three rounds the client below never saw
        server = _server_round(algorithm, server, torch.randn(16, generator=g) * (torch.rand(16, generator=g) < 0.5))
    content, _ = over_the_wire(broadcast_content(server.broadcast, [0], compact=True))
    assert "params" not in content.array_records and "extra" not in content.array_records
    assert records.wire_bytes(content) == 16 * 4  # K float32 scalars, nothing else
    rebuilt = algorithm.rebuild_broadcast(records.get_value(content, "wire"), w0)
    scalars = server.broadcast.extra["scalars"]
    assert torch.equal(rebuilt.extra["scalars"], scalars)
    # exactly the client's own replay from w0 (what client_update does with replay = "client") ...
    expected = rebuild(w0, candidate_seeds(0, 16), scalars, 0.1)
    assert all(torch.equal(rebuilt.params[n], expected[n]) for n in w0)
    # ... which is the server's round-by-round model up to float rounding, and not the initial one
    for name in w0:
        torch.testing.assert_close(rebuilt.params[name], server.state.params[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(rebuilt.params["body.w"], w0["body.w"])


def test_replay_server_is_refused_over_flower() -> None:
    cfg = {**DIGITS, "algorithm": "fedkseed", "model": "logreg", "fedkseed": {"k": 64, "steps": 5}}
    with pytest.raises(ConfigError, match=r'fedkseed.replay = "server" .* use --fedkseed.replay client'):
        run_server(cfg, LocalGrid(client_app(cfg), nodes(3)))


def test_paper_setting_sends_under_18_kb_and_matches_fedloom_run() -> None:
    grid = LocalGrid(client_app(PAPER), nodes(3))
    train_messages: list[int] = []  # each training message's full protobuf size (arrays and metadata)
    send = grid.send_and_receive

    def measure(messages, *, timeout=None):
        messages = list(messages)
        train_messages.extend(over_the_wire(m.content)[1] for m in messages
                              if m.metadata.message_type.startswith("train"))
        return send(messages, timeout=timeout)

    grid.send_and_receive = measure
    result = run_server(PAPER, grid)
    assert train_messages and max(train_messages) < 18_000  # 16,384 B of scalars + ~1.1 KB of metadata
    reference = fedloom.run(PAPER, out=None)
    assert_same_metrics(result.records, reference.records)
    for stats, record in zip(result.flower_stats, result.records[1:]):
        sampled = stats["clients_trained"]
        assert stats["bytes_down_sent"] == len(stats["node_train_s"]) * 4096 * 4  # the scalars, once per node
        assert stats["bytes_up_wire"] == sampled * 200 * 6 == record["bytes_up"]  # int16 index + float32 ĝ
        assert record["bytes_down"] == sampled * 4096 * 4
        assert (stats["bytes_down_sent"] / len(stats["node_train_s"]) + stats["bytes_up_wire"] / sampled) < 18_000


def test_clip_and_noise_keep_the_upload_compact_over_flower() -> None:
    cfg = {**DIGITS, "algorithm": "fedkseed", "model": "logreg", "transform": "clip,gaussian",
           "clip": {"norm": 0.5}, "gaussian": {"multiplier": 0.1},
           "fedkseed": {"k": 64, "steps": 20, "lr": 1e-3, "replay": "client"}}
    result = run_server(cfg, LocalGrid(client_app(cfg), nodes(3)))
    reference = fedloom.run(cfg, out=None)
    assert_same_metrics(result.records, reference.records)
    assert [s["bytes_up_wire"] for s in result.flower_stats] == [6 * 20 * 6] * 2  # not 6 × 64 float32



def test_fedkseed_pro_rebuilds_scalars_and_probabilities_after_missed_rounds() -> None:
    # half the clients per round: a node's clients skip rounds and rebuild from the latest download alone
    cfg = {**DIGITS, "algorithm": "fedkseed-pro", "model": "logreg", "join_ratio": 0.5, "rounds": 3,
           "fedkseed-pro": {"k": 64, "steps": 20, "lr": 1e-3, "replay": "client"}}
    result = run_server(cfg, LocalGrid(client_app(cfg), nodes(3)))
    assert_same_metrics(result.records, fedloom.run(cfg, out=None).records)
    for stats in result.flower_stats:  # K scalars + K probabilities per node, no dense model
        assert stats["bytes_down_sent"] == len(stats["node_train_s"]) * 64 * 2 * 4


def test_a_node_rebuilds_each_download_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # evaluation after round t and training in round t + 1 receive the same scalars: one rebuild for both
    calls: list[int] = []
    original = FedKSeed.rebuild_broadcast

    def counted(self, wire, init_params):
        calls.append(1)
        return original(self, wire, init_params)

    monkeypatch.setattr(FedKSeed, "rebuild_broadcast", counted)
    cfg = {**DIGITS, "algorithm": "fedkseed", "model": "logreg",
           "fedkseed": {"k": 64, "steps": 5, "lr": 1e-3, "replay": "client"}}
    run_server(cfg, LocalGrid(client_app(cfg), nodes(3)))
    assert len(calls) == 3 * (cfg["rounds"] + 1)  # per node: the broadcasts of rounds 0, 1, 2 (5 messages)
