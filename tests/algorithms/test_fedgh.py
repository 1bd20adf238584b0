"""FedGH: the server's head is trained on the uploaded prototypes and overwrites every client's head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import Broadcast
from fedloom.algorithms.tree import tree_select
from fedloom.models.base import is_head

from htfl_helpers import D, mixed, predictions, start, table_bytes, train_round


def test_server_head_is_trained_on_the_prototypes() -> None:
    exp = mixed("fedgh", server_epochs=20)
    server0 = start(exp)
    assert all(torch.equal(server0.broadcast.params[k], exp.runtime.init_params[k]) for k in ("head.weight",
                                                                                              "head.bias"))
    result, server1 = train_round(exp, server0, 1)
    assert result.bytes_up == table_bytes(exp, D)
    protos, labels = H.uploaded_pairs(result.uploads)

    def ce(head):
        return float(F.cross_entropy(F.linear(protos, head["head.weight"], head["head.bias"]), labels))

    assert ce(server1.broadcast.params) < 0.9 * ce(server0.broadcast.params)
    idle = exp.algorithm.__class__(server_epochs=0).server_update(server0.state, result.uploads)
    assert torch.equal(idle.broadcast.params["head.weight"], server0.broadcast.params["head.weight"])
    assert server1.broadcast.nbytes(0) == 4 * (D * 10 + 10)  # the head only


def test_the_global_head_overwrites_client_heads() -> None:
    exp = mixed("fedgh", server_epochs=5)
    _, server = train_round(exp, start(exp), 1)
    head = server.broadcast.params
    for client in (0, 1):
        state = exp.runtime.store.load(client)
        ctx = exp.runtime.client_context(client, 2)
        scored = exp.algorithm.eval_params(ctx, server.broadcast, state)
        assert all(torch.equal(scored[k], head[k]) for k in head)
        assert not torch.equal(tree_select(state["params"], is_head)["head.weight"], head["head.weight"])
        own = predictions(exp, state["params"], client)
        assert not torch.equal(predictions(exp, scored, client), own)
        # training starts from the global head: the trained head stays nearer to it than to the old own head
        marked = Broadcast(params={"head.weight": torch.zeros(10, D), "head.bias": torch.full((10,), 7.0)})
        trained = exp.algorithm.client_update(ctx, marked, state).state["params"]
        assert (trained["head.bias"] - 7.0).abs().max() < 0.5
        assert trained["head.weight"].norm() < 0.75 * state["params"]["head.weight"].norm()
