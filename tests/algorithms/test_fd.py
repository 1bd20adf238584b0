"""FD (federated distillation): per-class mean logits up (C×C), their unweighted mean down, the distillation
term in its two forms (softmax targets, HtFLlib's raw logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedloom.algorithms.base import Broadcast
from fedloom.algorithms.fd import distill_term

from htfl_helpers import C, mixed, start, table_bytes, train_round


def test_upload_is_the_per_class_mean_logit_and_the_server_averages_holders() -> None:
    exp = mixed("fd")
    result, server = train_round(exp, start(exp), 1)
    assert result.bytes_up == table_bytes(exp, C)
    means = []
    for c in range(4):
        ctx = exp.runtime.client_context(c, 1)
        x, y = ctx.data(ctx.train_indices)
        z = ctx.apply(exp.runtime.store.load(c)["params"], x)
        means.append({k: z[y == k].mean(0) for k in range(C) if (y == k).any()})
    for k in range(C):
        holders = [m[k] for m in means if k in m]
        assert torch.allclose(server.broadcast.extra["table"][k], torch.stack(holders).mean(0), atol=1e-5)


def test_distillation_term_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 2])
    table = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    present = torch.tensor([True, True, False])
    log_p = F.log_softmax(z, 1)
    soft = distill_term(z, y, table, present, "softmax", 1.0)
    assert torch.allclose(soft[0], -(F.softmax(table[0], 0) * log_p[0]).sum()) and soft[1] == 0
    raw = distill_term(z, y, table, present, "raw", 1.0)
    assert torch.allclose(raw[0], -(table[0] * log_p[0]).sum())  # raw logits as "probabilities"
    assert torch.allclose(raw[1], -(z[1] * log_p[1]).sum())  # absent class: its own logits


def test_distillation_pulls_the_outputs_to_the_global_logits() -> None:
    exp = mixed("fd", lam=5.0)
    ctx = exp.runtime.client_context(0, 2)
    params = exp.runtime.for_client(0).init_params
    table = torch.randn(C, C) * 3
    broadcast = Broadcast(params={}, extra={"table": table, "present": torch.ones(C)})
    pulled = exp.algorithm.client_update(ctx, broadcast, {"params": params}).state["params"]
    free = mixed("fd", lam=0.0).algorithm.client_update(ctx, broadcast, {"params": params}).state["params"]
    x, y = ctx.data(ctx.train_indices)

    def kl(p):
        return float(F.kl_div(F.log_softmax(ctx.apply(p, x), 1), F.softmax(table[y], 1), reduction="batchmean"))

    assert kl(pulled) < 0.8 * kl(free)
