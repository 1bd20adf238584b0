"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
NDSS 2021, arXiv 2012.13995): the server trains on a small clean root set and trusts uploads by their direction
relative to its own update."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, combine, flat, flat_matrix, report_admitted
from fedloom.seeding import torch_generator


def trust_coefficients(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """FLTrust's aggregate as coefficients on the uploads: TS_i = ReLU(cos(g_i, g_0)), each g_i rescaled to
    ‖g_0‖, then Σ TS_i ĝ_i / Σ TS_i; all zero when nobody is trusted."""
    x, g0 = points.double(), reference.double()
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-30)
    g0_norm = torch.linalg.vector_norm(g0)
    trust = torch.relu((x @ g0) / (norms * g0_norm.clamp_min(1e-30)))
    if float(trust.sum()) <= 0:
        return torch.zeros_like(trust)
    return trust * (g0_norm / norms) / trust.sum()


@AGGREGATORS.register("fltrust")
@dataclass(frozen=True)
class FLTrust(Aggregator):
    """FLTrust (Cao et al., NDSS 2021): the server's own update on a small root set weighs each upload by
    ReLU(cosine) and rescales it to the server update's norm. The root set: ``root_size`` samples drawn once per
    run, uniformly without replacement from the pooled training data of every client (a seeded stream of its own);
    each round the server runs the run's local SGD (same optimizer; epochs, lr and batch size overridable) from the
    global parameters on it, g_0 = trained − global, and aggregates :func:`trust_coefficients`. Uploads must be
    updates of the server's parameters (FedAvg's Δ). Uploads with a positive trust score count as admitted."""

    root_size: int = hp(100, ge=1, help="samples in the server's root set")
    epochs: Optional[int] = hp(None, ge=1, help="server epochs on the root set (None: the run's --local-epochs)")
    lr: Optional[float] = hp(None, gt=0, help="server learning rate on the root set (None: the run's --lr)")
    batch_size: Optional[int] = hp(None, ge=1, help="server batch size (None: the run's --batch-size)")

    def root_indices(self, runtime: Any, seed: int) -> torch.Tensor:
        pool = torch.cat([idx.cpu() for idx in runtime.data.train_idx])
        if self.root_size > pool.numel():
            raise ConfigError(f"fltrust.root_size = {self.root_size} exceeds the {pool.numel()} training samples")
        order = torch.randperm(pool.numel(), generator=torch_generator(seed, 0, -1, "aggregate:fltrust-root"))
        return pool[order[:self.root_size]].sort().values.to(runtime.data.train_idx[0].device)

    def server_update(self, ctx: AggregationContext, like: Tree) -> torch.Tensor:
        """g_0 flattened in the order of the uploads' leaves."""
        from fedloom.engines.local_sgd import LocalSGD

        runtime = ctx.services
        if runtime is None:
            raise ConfigError("fltrust needs the runtime's services (model, data) in the aggregation context")
        missing = [key for key in like if key not in ctx.global_params]
        if missing or not isinstance(like, dict):
            raise ConfigError(f"fltrust needs uploads that are updates of the server's model parameters "
                              f"(FedAvg-style Δ); these name {missing[:3]}")
        cfg = replace(runtime.sgd.at_round(ctx.round), **{k: v for k, v in (("epochs", self.epochs), ("lr", self.lr),
                                                         ("batch_size", self.batch_size)) if v is not None})
        data = runtime.data.dataset
        runner = LocalSGD(runtime.batch_loss, data.x, data.y, describe=f"fltrust root set, round {ctx.round}")
        start = {name: p for name, p in ctx.global_params.items()}
        trained, _ = runner.run(start, self.root_indices(runtime, ctx.seed), cfg, ctx.generator("fltrust-root-sgd"))
        return flat({key: (trained[key] - start[key]).detach().cpu() for key in like})

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        if ctx is None:
            raise ConfigError("fltrust needs the round's aggregation context")
        reference = self.server_update(ctx, items[0][1])
        coeffs = trust_coefficients(flat_matrix(items), reference)
        report_admitted(ctx, items, [p for p in range(len(items)) if coeffs[p] > 0])
        return combine(items, coeffs)
