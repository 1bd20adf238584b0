"""FedCP (J. Zhang, Y. Hua, H. Wang, T. Song, Z. Xue, R. Ma, H. Guan, "FedCP: Separating Feature Information
for Personalized Federated Learning via Conditional Policy", KDD 2023). Official code: TsingZ0/FedCP (same as
PFLlib's).

Modules of client i: the feature extractor φ (shared), a personalized head h_p (local), the global head h_g
(received, frozen locally), a frozen copy φ_g of the received extractor, and the Conditional Policy Network
CPN = Linear(D → 2D) → LayerNorm(2D) → ReLU (shared).
  * conditional input c_i = normalize(Σ_classes W_hp), the column sum of h_p's weight matrix;
  * policy {s_p, s_g} = Gumbel-softmax(CPN(φ(x) ⊙ c_i) viewed as (2, D), over the pair axis, τ), so
    s_p + s_g = 1 per feature dimension;
  * output h_p(φ(x) ⊙ s_p) + h_g(φ(x) ⊙ s_g);
  * loss CE + λ · MMD²_rbf(φ(x), φ_g(x)), one SGD over φ, h_p and the CPN;
  * after training the uploaded global head is ½h_p + ½h_g (the received h_g), with φ and the CPN.
Server: three sample-weighted averages (φ, global head, CPN). Download: φ (into φ and φ_g), h_g, CPN; h_p never
leaves the client. The broadcast's ``params`` is the model-shaped (φ, h_g); the CPN travels in ``extra``.

Evaluation: the official server evaluates at the start of a round with the modules received at the end of the
previous one: global φ, h_g and CPN, the client's h_p and c_i from it. That is ``eval_params`` right after
server step r. As in the official code the Gumbel noise is sampled at test time too (here from a seeded
per-client stream, so metrics are reproducible).

Paper vs PFLlib: c_i comes from h_p (paper); in the first round the official code uses a random context
``torch.rand(1, D)`` instead. Default: c_i from h_p always; ``pfllib_compat=True``: uniform random c_i until
the client's first update (drawn from a per-client stream, the same in evaluation and training).
PFLlib trains with shuffled batches (used here); the standalone FedCP repo uses unshuffled, drop_last ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _layers as L
from fedloom.algorithms._naming import tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation,
                                     Predictor, ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_map, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CPN = "cpn"  # tag of the policy network's entries in the flat training dict (cpn/fc.weight, see _naming)


@ALGORITHMS.register("fedcp")
@dataclass(frozen=True)
class FedCP(Algorithm):
    # Gumbel noise needs a per-client generator (ctx.generator), and evaluation is a Predictor
    vectorizable = False

    lamda: float = hp(5.0, ge=0, help="λ, weight of the MMD term (official run_me.sh: 5; PFLlib's argparse: 0)")
    tau: float = hp(1.0, gt=0, help="Gumbel-softmax temperature")
    pfllib_compat: bool = False  # True: random conditional input until the client's first update

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        dim = _feature_dim(init_params)
        gen = init_params.generator("fedcp-cpn")  # InitParams: the run's (seed, purpose) streams
        cpn = {"fc": L.linear_init(gen, dim, 2 * dim), "ln": L.layer_norm_init(2 * dim)}
        cpn = tree_map(lambda t: t.to(L.device_of(init_params)), cpn)
        state = ServerState(params=tree_clone(init_params), extra={"cpn": cpn})
        return ServerResult(state=state, broadcast=Broadcast(params=state.params, extra={"cpn": cpn}))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
        else:
            state = server.replace(params={**mean["body"], **mean["head"]}, extra={"cpn": mean["cpn"]},
                                   round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params, extra=state.extra))

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"head": tree_clone(tree_select(init_params, is_head)), "fresh": torch.tensor(True)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        received = broadcast.params
        start = {**tree_select(received, is_body), **state["head"], **tagged(CPN, _flat_cpn(broadcast))}
        aux = {"context": self.context(ctx, state), "gumbel": ctx.generator("fedcp-gumbel")}
        trained, metrics = ctx.local_sgd(start, batch_loss=self._loss_hook(ctx.apply, received), aux=aux)
        head_p = tree_select(trained, is_head)
        head_g = {n: 0.5 * head_p[n] + 0.5 * received[n] for n in head_p}  # ½h_p + ½h_g
        upload = {"body": tree_select(trained, is_body), "head": head_g,
                  "cpn": _nest_cpn(untagged(CPN, trained))}
        return ClientResult(upload=upload, state={"head": head_p, "fresh": torch.tensor(False)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def context(self, ctx: ClientContext, state: Tree) -> torch.Tensor:
        """c_i: normalized column sum of h_p's weight (random in the first round under pfllib_compat)."""
        weight = _head_product(state["head"])
        if self.pfllib_compat and bool(state["fresh"]):
            # round -1: one draw per client, identical wherever (evaluation, training) it is needed
            raw = torch.rand(1, weight.shape[1], generator=ctx.generator("fedcp-context", round_=-1))
            raw = raw.to(weight.device)
        else:
            raw = weight.sum(dim=0, keepdim=True)
        return F.normalize(raw, p=2, dim=1)

    def _loss_hook(self, apply: ApplyFn, received: Params) -> Any:
        # φ_g and h_g are the broadcast, shared by every client, so the closure is allowed
        frozen_body, head_g = tree_select(received, is_body), tree_select(received, is_head)

        def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            body, head_p = tree_select(w, is_body), tree_select(w, is_head)  # functional_call: model keys only
            rep = apply(body, x, "body")
            policy = _policy(_nest_cpn(untagged(CPN, w)), rep, aux["context"], self.tau, aux["gumbel"])
            out = _split_heads(lambda z: apply(head_p, z, "head"), lambda z: apply(head_g, z, "head"), rep, policy)
            with torch.no_grad():
                rep_g = apply(frozen_body, x, "body")
            mmd = L.mmd_rbf(rep, rep_g) if self.lamda else rep.new_zeros(())
            return F.cross_entropy(out, y, reduction="none") + self.lamda * mmd

        return loss

    # ------------------------------------------------------------------ evaluation
    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else self.init_client_state(broadcast.params, ctx.client_id)
        seed = torch.randint(0, 2**62, (1,), generator=ctx.generator("fedcp-eval-gumbel"))
        tree = {"body": tree_select(broadcast.params, is_body), "head_p": state["head"],
                "head_g": tree_select(broadcast.params, is_head), "cpn": broadcast.extra["cpn"],
                "context": self.context(ctx, state), "seed": seed}
        return Predictor(tree, self.predict)

    def predict(self, apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(tree["seed"]))  # CPU: gumbel_softmax moves the noise
        rep = apply(tree["body"], x, "body")
        policy = _policy(tree["cpn"], rep, tree["context"], self.tau, gen)
        return _split_heads(lambda z: apply(tree["head_p"], z, "head"), lambda z: apply(tree["head_g"], z, "head"),
                            rep, policy)


# ---------------------------------------------------------------------- functional pieces
def _policy(cpn: Tree, rep: torch.Tensor, context: torch.Tensor, tau: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_p, s_g) per sample and feature: Gumbel-softmax over the pair axis of CPN(rep ⊙ c)."""
    hidden = torch.relu(L.layer_norm(L.linear(rep * context, cpn["fc"]), cpn["ln"]))
    pair = L.gumbel_softmax(hidden.view(rep.shape[0], 2, -1), tau, generator, dim=1)
    return pair[:, 0, :], pair[:, 1, :]


def _split_heads(head_p: Any, head_g: Any, rep: torch.Tensor,
                 policy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return head_p(rep * policy[0]) + head_g(rep * policy[1])


def _flat_cpn(broadcast: Broadcast) -> Params:
    cpn = broadcast.extra["cpn"]
    return {f"{layer}.{name}": t for layer, sub in cpn.items() for name, t in sub.items()}


def _nest_cpn(flat: Params) -> Tree:
    nested: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        layer, name = key.split(".", 1)
        nested.setdefault(layer, {})[name] = value
    return nested


def _head_product(head: Params) -> torch.Tensor:
    """The head's weight matrices multiplied (last @ ... @ first): C × D; just W for a linear head."""
    weights = [t for n, t in head.items() if n.endswith("weight") and t.dim() == 2]
    product = weights[-1]
    for matrix in reversed(weights[:-1]):
        product = product @ matrix
    return product.detach()


def _feature_dim(params: Params) -> int:
    return int(params[_head_weight_name(params)].shape[1])


def _head_weight_name(params: Params) -> str:
    """The head's first weight matrix (its input width is the feature dimension D)."""
    return next(n for n in params if is_head(n) and n.endswith("weight") and params[n].dim() == 2)
