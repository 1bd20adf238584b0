"""FedIT (Zhang, Vahidian, Kuo, Li, Ruan, Zhao, Chen, "Towards Building the Federated GPT: Federated
Instruction Tuning", ICASSP 2024): FedAvg of LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022) over a frozen base model, the first-order baseline of FedKSeed (Qin et al., ICML 2024).

Every adapted weight W [m, n] is used as ``W + (alpha / rank) · L @ R`` with L [m, rank] (zeros at start) and
R [rank, n] (uniform ±1/√n, from the run seed), so training starts from the base model; only L and R are trained
(local SGD with the run's --lr, --local-epochs, --batch-size), uploaded and averaged (each factor separately, as
FedIT does). Download and upload are the adapters' bytes. The base model is the run's initial model, which every
client holds (as FedKSeed's w0).

The adapters are written here as the parameter dict fedloom trains functionally (``lora/<weight>/l``,
``lora/<weight>/r``) rather than through ``peft``'s module wrappers: the maths is peft's default LoRA (rank r,
scaling alpha/r, one factor zero-initialised, no dropout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

from fedloom.algorithms._naming import tag_name, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.wire import Compact, flatten, unflatten
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

#: weights never adapted: token and position embeddings and the (tied) output layer
EMBEDDING_WORDS = ("wte", "wpe", "embed", "lm_head")


def adapted_names(params: Params, targets: str) -> list[str]:
    """The 2-D weights that get adapters: those whose name contains one of ``targets`` (comma-separated), or every
    non-embedding matrix when ``targets`` is empty."""
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, p in params.items() if p.dim() == 2 and p.is_floating_point()
             and not any(word in n for word in EMBEDDING_WORDS)]
    return [n for n in names if not wanted or any(t in n for t in wanted)]


def merged(base: Params, adapters: Params, scale: float) -> Params:
    """The model the adapters define: ``W + scale · L @ R`` for every adapted W, the base elsewhere."""
    out = dict(base)
    for name in {key.rsplit("/", 1)[0] for key in adapters}:
        out[name] = base[name] + scale * adapters[f"{name}/l"] @ adapters[f"{name}/r"]
    return out


@ALGORITHMS.register("fedit")
@dataclass(frozen=True)
class FedIT(Algorithm):
    vectorizable: ClassVar[bool] = False

    rank: int = hp(8, ge=1, help="LoRA rank r")
    alpha: float = hp(16.0, gt=0, help="LoRA alpha (the update is scaled by alpha / rank)")
    targets: str = hp("", help="comma-separated parts of the weight names to adapt, e.g. c_attn (empty: every "
                               "non-embedding matrix)")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def validate_for_model(self, init_params: Params) -> None:
        if not adapted_names(init_params, self.targets):
            raise ConfigError(f"fedit.targets {self.targets!r} matches no 2-D weight of the model")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        gen = torch_generator(getattr(init_params, "seed", 0), -1, -1, "fedit-lora")
        adapters = {}
        for name in adapted_names(init_params, self.targets):
            m, n = init_params[name].shape
            device = init_params[name].device
            adapters[f"{name}/l"] = torch.zeros(m, self.rank, device=device)
            bound = 1.0 / math.sqrt(n)
            adapters[f"{name}/r"] = ((torch.rand(self.rank, n, generator=gen) * 2 - 1) * bound).to(device)
        state = ServerState(params=dict(init_params), extra={"adapters": adapters})
        return ServerResult(state=state, broadcast=self.broadcast_of(dict(init_params), adapters))

    def broadcast_of(self, base: Params, adapters: Params) -> Broadcast:
        # params: the merged model clients are scored with; the wire carries only the adapters
        return Broadcast(params=merged(base, adapters, self.scale), extra={"adapters": adapters},
                         wire=Compact(flatten(adapters), dict))

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {tag_name("lora", k): v for k, v in broadcast.extra["adapters"].items()}
        base = ctx.init_params  # the frozen base model every client holds

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            return ctx.task_loss(ctx.apply(merged(base, untagged("lora", params), self.scale), x), y)

        trained, metrics = ctx.local_sgd(start, batch_loss=loss)
        delta = tree_sub(untagged("lora", trained), broadcast.extra["adapters"])
        return ClientResult(upload=delta, state=None, weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        adapters = server.extra["adapters"] if mean is None else tree_add(server.extra["adapters"], mean)
        state = server.replace(round=server.round + 1, extra={"adapters": adapters})
        return ServerResult(state=state, broadcast=self.broadcast_of(server.params, adapters))
