"""FedGen, data-free knowledge distillation (Z. Zhu, J. Hong, J. Zhou, "Data-Free Knowledge Distillation for
Heterogeneous Federated Learning", ICML 2021, arXiv 2105.10056), as HtFLlib runs it on heterogeneous bodies
(``servergen``/``clientgen``): the heads (one shape, Linear(D, C)) are shared and the server learns a
conditional generator of D-dimensional features.

* server generator G(y, ε): concat(ε ~ U[0, 1)^noise_dim, onehot(y)) → Linear(hidden) → BatchNorm (batch
  statistics) → ReLU → Linear(D); drawn from the run seed, kept across rounds;
* client: its head overwritten by the global head, then CE(model(x), y) + CE(h(G(ŷ, ε)), ŷ) on every batch, with
  ``batch_size`` labels ŷ drawn from the federation's label distribution and fresh noise (the client's stream);
  upload: its head and its training label counts (C floats: the server's label pool, which HtFLlib reads from
  every client at start-up);
* server, each round: ``server_epochs`` Adam steps (lr ``generator_lr``) on G with CE(Σ_i p_i h_i(G(ŷ, ε)), ŷ),
  the sample-weighted ensemble of the uploaded heads as the teacher (labels from the pool); then the global head =
  the sample-weighted mean of the heads; G, the head and the label distribution are sent;
* inference: the client's body with the global head.

This is the version in PFLlib/HtFLlib ("FedGen-lite"): the paper's diversity loss, per-label teacher weights
and decaying client KD weights are not in it. Defaults are HtFLlib's tuned ``total.sh`` values (noise_dim 32,
hidden 512, generator lr 0.1, 100 server steps; PFLlib's are 512/512/0.005/1000); ``gen_batch_size`` is the
library's batch size (10), which it uses for generated batches on both sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.fedgh import LINEAR_HEAD, FedGH
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body, is_head
from fedloom.models.generators import Adam
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedgen")
@dataclass(frozen=True)
class FedGen(Algorithm):
    aggregation = "all"  # the teacher ensemble needs every head
    vectorizable = False
    shared_architecture = False
    needs_common_feature_dim = True  # generated D-dim features feed every head
    needs_homogeneous_head: ClassVar[bool] = True

    noise_dim: int = hp(32, ge=1, help="dimension of the generator's uniform noise")
    hidden_dim: int = hp(512, ge=1, help="hidden width of the generator")
    generator_lr: float = hp(0.1, gt=0, help="Adam learning rate of the generator")
    server_epochs: int = hp(100, ge=0, help="generator steps per round")
    gen_batch_size: int = hp(10, ge=1, help="generated features per step (HtFLlib: its batch size, 10)")

    validate_for_model = FedGH.validate_for_model  # the server runs the heads as Linear(D, C)

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        head = tree_clone(tree_select(init_params, is_head))
        classes, dim = head["head.weight"].shape
        seed = getattr(init_params, "seed", 0)
        gen = init_generator(self.noise_dim + classes, self.hidden_dim, dim, seed, head["head.weight"].device)
        extra = {"generator": gen, "labels": torch.zeros(classes, device=head["head.weight"].device)}
        state = ServerState(params=head, extra={**extra, "seed": torch.tensor(seed), "pool": {}})
        return ServerResult(state=state, broadcast=Broadcast(params=head, extra=extra))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"body": tree_clone(tree_select(init_params, is_body))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        counts = ctx.train_label_counts()
        pool = broadcast.extra["labels"]
        pool = pool if float(pool.sum()) > 0 else counts  # before the server knows any labels: its own
        batch = self.gen_batch_size
        hook = generated_loss(ctx.apply, broadcast.extra["generator"], pool, self.noise_dim, batch,
                              ctx.generator("fedgen-samples"))
        trained, metrics = ctx.local_sgd({**state["body"], **broadcast.params}, batch_loss=hook)
        upload = {"head": tree_select(trained, is_head), "labels": counts}
        return ClientResult(upload=upload, state={"body": tree_select(trained, is_body)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1, extra=dict(server.extra))
        items = uploads.all()
        if not items:
            return ServerResult(state=state, broadcast=self.broadcast(state))
        pool = {**server.extra["pool"], **{str(cid): upload["labels"] for cid, upload, _ in items}}
        labels = torch.stack(list(pool.values())).sum(0)
        total = sum(weight for _, _, weight in items)
        heads = [(upload["head"], weight / total) for _, upload, weight in items]
        gen = torch_generator(int(server.extra["seed"]), state.round, -1, "fedgen-server")
        generator, loss = self.train_generator(server.extra["generator"], heads, labels, gen)
        state.params = {k: sum(h[k] * w for h, w in heads) for k in LINEAR_HEAD}
        state.extra.update(generator=generator, labels=labels, pool=pool)
        return ServerResult(state=state, broadcast=self.broadcast(state), metrics={"generator_loss": loss})

    def broadcast(self, state: ServerState) -> Broadcast:
        return Broadcast(params=state.params, extra={"generator": state.extra["generator"],
                                                     "labels": state.extra["labels"]})

    def train_generator(self, params: Params, heads: list, labels: torch.Tensor,
                        gen: torch.Generator) -> tuple[Params, float]:
        """Adam on G against the sample-weighted ensemble of the uploaded heads."""
        work = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        adam = Adam(list(work.values()), self.generator_lr)
        loss = torch.tensor(float("nan"))
        for _ in range(self.server_epochs):
            y = torch.multinomial(labels.float().cpu(), self.gen_batch_size, replacement=True,
                                  generator=gen).to(labels.device)
            z = generate(work, y, self.noise_dim, gen)
            logits = sum(w * F.linear(z, h["head.weight"], h["head.bias"]) for h, w in heads)
            loss = F.cross_entropy(logits, y)
            adam.step(torch.autograd.grad(loss, list(work.values())))
        return {k: v.detach() for k, v in work.items()}, float(loss.detach())

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        body = state["body"] if state is not None else tree_select(ctx.init_params, is_body)
        return {**body, **broadcast.params}


def init_generator(inputs: int, hidden: int, dim: int, seed: int, device: torch.device) -> Params:
    """G with PyTorch's default initialisation (Linear ~ U(±1/√fan_in), BatchNorm γ = 1, β = 0)."""
    gen = torch_generator(seed, -1, -1, "fedgen-init")

    def uniform(fan_in: int, *shape: int) -> torch.Tensor:
        return ((torch.rand(*shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)).to(device)

    return {"fc1.weight": uniform(inputs, hidden, inputs), "fc1.bias": uniform(inputs, hidden),
            "bn.weight": torch.ones(hidden, device=device), "bn.bias": torch.zeros(hidden, device=device),
            "fc.weight": uniform(hidden, dim, hidden), "fc.bias": uniform(hidden, dim)}


def generate(g: Params, y: torch.Tensor, noise_dim: int, gen: torch.Generator) -> torch.Tensor:
    """G(y, ε): features for labels y, with ε ~ U[0, 1) drawn from ``gen``; BatchNorm on the batch's statistics."""
    classes = g["fc1.weight"].shape[1] - noise_dim
    eps = torch.rand(y.shape[0], noise_dim, generator=gen).to(y.device)
    h = F.linear(torch.cat([eps, F.one_hot(y, classes).float()], 1), g["fc1.weight"], g["fc1.bias"])
    h = F.batch_norm(h, None, None, g["bn.weight"], g["bn.bias"], training=True)
    return F.linear(F.relu(h), g["fc.weight"], g["fc.bias"])


def generated_loss(apply: Any, g: Params, pool: torch.Tensor, noise_dim: int, batch: int,
                   gen: torch.Generator) -> Any:
    """Per-sample CE on real data plus the batch's CE(h(G(ŷ)), ŷ) on generated features (G held fixed)."""
    g = {k: v.detach() for k, v in g.items()}

    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
        real = F.cross_entropy(apply(w, x), y, reduction="none")
        labels = torch.multinomial(pool.float().cpu(), batch, replacement=True, generator=gen).to(y.device)
        with torch.no_grad():
            z = generate(g, labels, noise_dim, gen)
        return real + F.cross_entropy(apply(w, z, "head"), labels)

    return loss
