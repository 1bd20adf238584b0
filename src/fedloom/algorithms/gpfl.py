"""GPFL (J. Zhang, Y. Hua, H. Wang, T. Song, Z. Xue, R. Ma, J. Cao, H. Guan, "GPFL: Simultaneously Learning
Global and Personalized Feature Information for Personalized Federated Learning", ICCV 2023). Official code:
TsingZ0/GPFL (same as PFLlib's).

Modules of client i: the feature extractor φ (shared), its head h (local), the Global Category Embedding
GCE = E ∈ R^{C×D} (shared) and the Conditional Valve CoV (shared) with branches γ, β, each
Linear(D, D) → ReLU → LayerNorm(D):  CoV(f, c) = ReLU(f ⊙ (γ(c) + 1) + β(c)).
  * conditional inputs, recomputed whenever a new GCE arrives, from the client's own GCE before it is
    replaced: g = (1/C) Σ_c E_c and p_i = Σ_c P_i(c) E_c, P_i the client's training label frequencies (zeros
    until the first download, as in the official code);
  * f = φ(x), f_P = CoV(f, p_i), f_G = CoV(f, g);
  * loss = CE(h(f_P), y) + L_GCE + λ ‖f_G − Ē_y‖_F, where L_GCE = CE over the cosine logits cos(f_G, E_c) (the
    "angular" loss, no scale or margin) and Ē is a frozen copy of the GCE received this round; the norm is the
    Frobenius norm over the batch (not squared, not averaged), as in the official code;
  * φ and h take plain SGD steps; GCE and CoV take SGD steps with weight decay μ (a separate optimizer in the
    official code; here the same step, g + μθ, through the loop's grad_correction hook).
Upload: φ, GCE, CoV (sample-weighted averages on the server). Download: the same; h never leaves the client.
Inference: h(CoV(φ(x), p_i)).

Evaluation: the official server evaluates at the start of a round with what it sent at the end of the last one
(global φ and CoV, the client's head and p_i from its own trained GCE): ``eval_params`` right after server step
r. No known difference between the paper and PFLlib, so there is no ``pfllib_compat`` switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _layers as L
from fedloom.algorithms._naming import is_model_name, tag_name, tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation,
                                     Predictor, ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_map, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

# the extra modules' entries in the flat training dict (see _naming): gce/weight and cov/<branch>.<layer>.<name>
GCE, COV = tag_name("gce", "weight"), "cov"
BRANCHES = ("gamma", "beta")


@ALGORITHMS.register("gpfl")
@dataclass(frozen=True)
class GPFL(Algorithm):
    # evaluation is a Predictor (head on the valve's output), which the pack evaluation does not stack yet
    vectorizable = False

    lamda: float = hp(0.01, ge=0, help="λ, weight of ‖f_G − Ē_y‖ (official run_me.sh: 0.01 for the CNN and MLP)")
    mu: float = hp(0.1, ge=0, help="μ, weight decay of GCE and CoV (0.1 for the CNN/MLP; 0 for ResNet-18)")

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        head_weight = next(t for n, t in init_params.items() if is_head(n) and t.dim() == 2)
        classes, dim = int(head_weight.shape[0]), int(head_weight.shape[1])
        gen = init_params.generator("gpfl-modules")  # InitParams: the run's (seed, purpose) streams
        cov = {b: {"fc": L.linear_init(gen, dim, dim), "ln": L.layer_norm_init(dim)} for b in BRANCHES}
        device = L.device_of(init_params)
        extra = tree_map(lambda t: t.to(device), {"gce": L.embedding_init(gen, classes, dim), "cov": cov})
        state = ServerState(params=tree_clone(tree_select(init_params, is_body)), extra=extra)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params, extra=extra))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
        else:
            state = server.replace(params=mean["body"], extra={"gce": mean["gce"], "cov": mean["cov"]},
                                   round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params, extra=state.extra))

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        head = tree_clone(tree_select(init_params, is_head))
        weight = next(t for t in head.values() if t.dim() == 2)
        zeros = weight.new_zeros(weight.shape[1])
        return {"head": head, "p_in": zeros, "g_in": zeros.clone()}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        extra = broadcast.extra
        start = {**broadcast.params, **state["head"], GCE: extra["gce"],
                 **tagged(COV, _flat(extra["cov"]))}
        aux = {"p_in": state["p_in"], "g_in": state["g_in"]}
        trained, metrics = ctx.local_sgd(start, batch_loss=self._loss_hook(ctx.apply, extra["gce"]),
                                         grad_correction=self._decay if self.mu else None, aux=aux)
        gce, cov = trained[GCE], _nest(untagged(COV, trained))
        p_in, g_in = self.conditional_inputs(gce, ctx.train_label_counts())
        upload = {"body": tree_select(trained, is_body), "gce": gce, "cov": cov}
        new_state = {"head": tree_select(trained, is_head), "p_in": p_in, "g_in": g_in}
        return ClientResult(upload=upload, state=new_state, weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def conditional_inputs(gce: torch.Tensor, label_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_i, g): the client's label-frequency-weighted and the uniform mean of its category embeddings."""
        freq = (label_counts / label_counts.sum()).to(gce.device)
        return (freq @ gce).detach(), gce.mean(dim=0).detach()

    def _decay(self, w: Params, grads: Params, aux: Any) -> Params:
        # SGD weight decay μ on GCE and CoV only (the model's own optimizer has none): g + μθ, as torch.optim.SGD
        return {n: g + self.mu * w[n].detach() if not is_model_name(n) else g for n, g in grads.items()}

    def _loss_hook(self, apply: ApplyFn, frozen_gce: torch.Tensor) -> Any:
        # Ē (the received GCE) is the broadcast, shared by every client, so the closure is allowed

        def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            cov = _nest(untagged(COV, w))
            feat = apply(tree_select(w, is_body), x, "body")
            out = apply(tree_select(w, is_head), valve(cov, feat, aux["p_in"]), "head")
            feat_g = valve(cov, feat, aux["g_in"])
            angular = angular_loss(feat_g, w[GCE], y)
            anchor = torch.linalg.vector_norm(feat_g - frozen_gce[y].detach())  # Frobenius, over the batch
            return F.cross_entropy(out, y, reduction="none") + angular + self.lamda * anchor

        return loss

    # ------------------------------------------------------------------ evaluation
    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else self.init_client_state(broadcast.params, ctx.client_id)
        tree = {"body": broadcast.params, "head": state["head"], "cov": broadcast.extra["cov"],
                "p_in": state["p_in"]}
        return Predictor(tree, predict)


def predict(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """h(CoV(φ(x), p_i))."""
    return apply(tree["head"], valve(tree["cov"], apply(tree["body"], x, "body"), tree["p_in"]), "head")


def valve(cov: Tree, feat: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """CoV(f, c) = ReLU(f ⊙ (γ(c) + 1) + β(c)), γ and β = LayerNorm(ReLU(Linear(c)))."""
    gamma, beta = (L.layer_norm(torch.relu(L.linear(condition, cov[b]["fc"])), cov[b]["ln"]) for b in BRANCHES)
    return torch.relu(feat * (gamma + 1) + beta)


def angular_loss(feat: torch.Tensor, gce: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample CE over cosine logits cos(f, E_c) (GPFL's GCE loss; no scale, no margin)."""
    cosine = F.normalize(feat) @ F.normalize(gce).T
    return F.cross_entropy(cosine, y, reduction="none")


def _flat(cov: Tree) -> Params:
    return {f"{b}.{layer}.{name}": t for b, sub in cov.items() for layer, p in sub.items() for name, t in p.items()}


def _nest(flat: Params) -> Tree:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        branch, layer, name = key.split(".")
        nested.setdefault(branch, {}).setdefault(layer, {})[name] = value
    return nested
