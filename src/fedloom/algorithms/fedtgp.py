"""FedTGP (J. Zhang, Y. Liu, Y. Hua, J. Cao, "FedTGP: Trainable Global Prototypes with Adaptive-Margin-Enhanced
Contrastive Learning for Data and Model Heterogeneity in Federated Learning", AAAI 2024, arXiv 2401.03230).
Official code: TsingZ0/FedTGP (``servertgp``/``clienttgp``), also in HtFLlib.

Clients are FedProto's (CE + λ·MSE(φ(x), P̂_y), prototypes uploaded after training, nearest-prototype
inference). The server replaces FedProto's average by trainable global prototypes:

* the TGP module Embedding(C, D) → Linear(D, D) → ReLU → Linear(D, D) (hidden width D) lives on the server
  only, drawn once from the run seed and kept across rounds; it is the only thing the server trains;
* each round: the mean of the uploaded prototypes per class; gap_c = the smallest Euclidean distance from class
  c's mean to another class's mean (a class alone takes the smallest gap); max_gap = max_c gap_c and the margin
  δ = min(max_gap, τ);
* ``server_epochs`` passes of SGD (``server_lr``, batches of ``server_batch_size``, shuffled from the round's
  server stream) over every uploaded (prototype, class) pair with the adaptive-margin contrastive loss
  CE(−(‖P − TGP(c)‖₂ + 𝟙[c = y]·δ)_c, y);
* the global prototypes P̂_c = TGP(c) of the classes uploaded this round are sent to every client.

Defaults are the paper's and the official ``run_me.sh``: λ = 10, server_epochs = 100, τ = 100; the official
server lr is the clients' lr (0.01 in its scripts) and its batch the clients' (10): set ``server_lr`` and
``server_batch_size`` to the run's ``--lr`` and ``--batch-size`` to match another setting.
Vectorizable as FedProto (the client half is FedProto's; the TGP module is the server's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import ALGORITHMS, Broadcast, Federation, ServerResult, ServerState
from fedloom.algorithms.fedproto import FedProto
from fedloom.algorithms.tree import Params
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.seeding import torch_generator


@ALGORITHMS.register("fedtgp")
@dataclass(frozen=True)
class FedTGP(FedProto):
    aggregation = "all"  # the server trains on every uploaded (prototype, class) pair

    lam: float = hp(10.0, ge=0, help="weight λ of the client's MSE(φ(x), P̂_y)")
    server_epochs: int = hp(100, ge=0, help="passes of TGP training over the uploaded prototypes per round")
    server_lr: float = hp(0.01, gt=0, help="SGD learning rate of the TGP module (official: the clients' lr)")
    server_batch_size: int = hp(10, ge=1, help="prototypes per TGP step (official: the clients' batch size)")
    tau: float = hp(100.0, ge=0, help="margin threshold τ: the margin is min(max_gap, τ)")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        # the TGP module is drawn at the first server step, when C and D are known from the uploads
        seed = torch.tensor(getattr(init_params, "seed", 0), dtype=torch.int64)
        return ServerResult(state=ServerState(params={}, extra={"seed": seed}), broadcast=Broadcast(params={}))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1, extra=dict(server.extra))
        mean = H.per_class_mean(uploads)
        if mean is None:
            return ServerResult(state=state, broadcast=H.table_broadcast(*self.kept(server)))
        protos, labels = H.uploaded_pairs(uploads)
        seed = int(server.extra["seed"])
        tgp = state.extra.get("tgp") or init_tgp(mean[0].shape[0], mean[0].shape[1], seed)
        tgp = {k: v.to(protos.device) for k, v in tgp.items()}
        margin = min(max_gap(*mean), self.tau)
        tgp, loss = self.train(tgp, protos, labels, margin, torch_generator(seed, state.round, -1, "fedtgp-server"))
        with torch.no_grad():
            table = tgp_forward(tgp, torch.arange(mean[0].shape[0], device=protos.device))
        state.extra.update(tgp=tgp, table=table, present=mean[1].float())
        return ServerResult(state=state, broadcast=H.table_broadcast(table, mean[1]),
                            metrics={"margin": float(margin), "tgp_loss": loss})

    def train(self, tgp: Params, protos: torch.Tensor, labels: torch.Tensor, margin: float,
              generator: torch.Generator) -> tuple[Params, float]:
        """SGD on the TGP module alone with the adaptive-margin contrastive loss; the mean loss of the last pass."""
        work = {k: v.detach().clone().requires_grad_(True) for k, v in tgp.items()}
        classes = torch.arange(work["embedding"].shape[0], device=protos.device)
        last = float("nan")
        for _ in range(self.server_epochs):
            order = torch.randperm(protos.shape[0], generator=generator).to(protos.device)
            losses = []
            for batch in order.split(self.server_batch_size):
                dist = torch.cdist(protos[batch], tgp_forward(work, classes))
                dist = dist + margin * F.one_hot(labels[batch], classes.numel())
                loss = F.cross_entropy(-dist, labels[batch])
                grads = torch.autograd.grad(loss, list(work.values()))
                with torch.no_grad():
                    for value, grad in zip(work.values(), grads):
                        value -= self.server_lr * grad
                losses.append(float(loss.detach()))
            last = sum(losses) / len(losses)
        return {k: v.detach() for k, v in work.items()}, last


def max_gap(means: torch.Tensor, present: torch.Tensor) -> float:
    """max_c of the distance from class c's mean prototype to its nearest other class mean (official rule: a
    class without another to compare with takes the smallest gap)."""
    held = means[present]
    if held.shape[0] < 2:
        return 0.0
    dist = torch.cdist(held, held)
    dist.fill_diagonal_(float("inf"))
    return float(dist.min(1).values.max())


def init_tgp(classes: int, dim: int, seed: int) -> Params:
    """The TGP module with PyTorch's default initialisation (Embedding ~ N(0, 1), Linear ~ U(±1/√fan_in)),
    drawn from the run seed's "fedtgp-init" stream."""
    gen = torch_generator(seed, -1, -1, "fedtgp-init")
    bound = 1 / math.sqrt(dim)
    uniform = lambda *shape: (torch.rand(*shape, generator=gen) * 2 - 1) * bound  # noqa: E731
    return {"embedding": torch.randn(classes, dim, generator=gen), "fc1.weight": uniform(dim, dim),
            "fc1.bias": uniform(dim), "fc2.weight": uniform(dim, dim), "fc2.bias": uniform(dim)}


def tgp_forward(tgp: Params, classes: torch.Tensor) -> torch.Tensor:
    """TGP(c) = Linear(ReLU(Linear(Embedding(c))))."""
    hidden = F.relu(F.linear(tgp["embedding"].to(classes.device)[classes], tgp["fc1.weight"], tgp["fc1.bias"]))
    return F.linear(hidden, tgp["fc2.weight"], tgp["fc2.bias"])
