"""FedMRL (L. Yi, H. Yu, C. Ren, G. Wang, X. Liu, X. Li, "Federated Model Heterogeneous Matryoshka
Representation Learning", NeurIPS 2024, arXiv 2406.00488); HtFLlib ``servermrl``/``clientmrl``.

Each client keeps its own (heterogeneous) model and a local projector proj: Linear(D_g + D, D); a small
homogeneous model is shared. For an input x:
    r = proj([φ_g(x); φ(x)]),   local logits = h(r),   global logits = h_g(r[:, :d])  (the nested, "Matryoshka"
    sub-representation of width d = ``sub_feature_dim``),
and the client, its projector and the shared model are trained together with CE(local) + CE(global). The shared
model is the only upload; the server averages it without weights. Inference: h(proj([φ_g(x); φ(x)])) with the
latest shared model.

The shared model here is the federation's first architecture's body (width D_g = D, the HtFLlib convention for
a missing ``args.global_model``) with its own head h_g = Linear(d, C); HtFLlib's global model is a separate small
model whose body outputs d features. ``keep_proj`` (default True, the paper: the projector is a local module that
keeps learning) or False (HtFLlib: the trained projector is never saved, so every round starts from its initial
one). The projector's initial weights are one draw from the run seed shared by all clients (HtFLlib seeds it
with 0 in every client). Default d = 128 (HtFLlib ``-sfd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms._naming import tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation,
                                     Predictor, ServerResult, ServerState)
from fedloom.algorithms.fedktl import linear_init, num_outputs
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.models.base import is_body
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

LOCAL, SHARED, PROJ = "local", "shared", "proj"


@ALGORITHMS.register("fedmrl")
@dataclass(frozen=True)
class FedMRL(Algorithm):
    shared_architecture = False
    needs_common_feature_dim = True  # proj: Linear(D_g + D, D) with D_g = D
    vectorizable = False

    sub_feature_dim: int = hp(128, ge=1, help="width d of the nested representation the shared head sees")
    keep_proj: bool = hp(True, help="keep the trained projector across rounds (False: HtFLlib resets it)")

    def validate_for_model(self, init_params: Params) -> None:
        dim = feature_dim(init_params)
        if dim is not None and self.sub_feature_dim > dim:
            raise ConfigError(f"fedmrl.sub_feature_dim must be at most the model's feature width {dim}, "
                              f"got {self.sub_feature_dim}")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        gen = torch_generator(getattr(init_params, "seed", 0), -1, -1, "fedmrl-head")
        shared = {"body": tree_clone(tree_select(init_params, is_body)),
                  "head": linear_init(self.sub_feature_dim, num_outputs(init_params), gen)}
        device = next(iter(init_params.values())).device
        shared = {part: {k: v.to(device) for k, v in tree.items()} for part, tree in shared.items()}
        return ServerResult(state=ServerState(params=shared), broadcast=Broadcast(params=shared))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        dim = feature_dim(init_params)
        gen = torch_generator(getattr(init_params, "seed", 0), -1, -1, "fedmrl-proj")  # one draw for all
        device = next(iter(init_params.values())).device
        proj = {k: v.to(device) for k, v in linear_init(2 * dim, dim, gen).items()}
        return {"params": tree_clone(init_params), "proj": proj, "proj0": tree_clone(proj)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        shared = broadcast.params
        start = {**tagged(LOCAL, state["params"]), **tagged("sbody", shared["body"]),
                 **tagged("shead", shared["head"]), **tagged(PROJ, state["proj"])}
        trained, metrics = ctx.local_sgd(start, batch_loss=self.loss(ctx.apply, H.shared_apply(ctx)))
        upload = {"body": untagged("sbody", trained), "head": untagged("shead", trained)}
        proj = untagged(PROJ, trained) if self.keep_proj else state["proj0"]
        return ClientResult(upload=upload, state={"params": untagged(LOCAL, trained), "proj": proj,
                                                  "proj0": state["proj0"]}, weight=1.0, metrics=metrics)

    def loss(self, apply: ApplyFn, shared_apply: ApplyFn) -> Any:
        d = self.sub_feature_dim

        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            local, proj, head = untagged(LOCAL, w), untagged(PROJ, w), untagged("shead", w)
            r = represent(apply, shared_apply, local, untagged("sbody", w), proj, x)
            out = apply(local, r, "head")
            out_g = F.linear(r[:, :d], head["weight"], head["bias"])
            return F.cross_entropy(out, y, reduction="none") + F.cross_entropy(out_g, y, reduction="none")

        return batch_loss

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        shared = uploads.weighted_mean()
        state = server.replace(round=server.round + 1, params=shared if shared is not None else server.params)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else self.init_client_state(ctx.init_params, ctx.client_id)
        tree = {"params": state["params"], "shared_body": broadcast.params["body"], "proj": state["proj"]}
        return Predictor(tree, _Predict(H.shared_apply(ctx)))


@dataclass(frozen=True)
class _Predict:
    """h(proj([φ_g(x); φ(x)])): needs the shared architecture's apply beside the client's own."""

    shared_apply: Any

    def __call__(self, apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
        r = represent(apply, self.shared_apply, tree["params"], tree["shared_body"], tree["proj"], x)
        return apply(tree["params"], r, "head")


def represent(apply: ApplyFn, shared_apply: ApplyFn, local: Params, shared_body: Params, proj: Params,
              x: torch.Tensor) -> torch.Tensor:
    """r = proj([φ_g(x); φ(x)])."""
    both = torch.cat([H.body(shared_apply, shared_body, x), H.body(apply, local, x)], dim=1)
    return F.linear(both, proj["weight"], proj["bias"])


def feature_dim(init_params: Params) -> Optional[int]:
    template = getattr(init_params, "template", None)
    return None if template is None else int(template.feature_dim)

