"""FedPCL (Tan, Long, Ma, Liu, Zhou, Jiang, "Federated Learning from Pre-Trained Models: A Contrastive Learning
Approach", NeurIPS 2022), without pre-trained backbones, as PFLlib runs it (``serverpcl.py`` /
``clientpcl.py``): every client trains its own feature extractor φ_i (the model's body; the head is unused)
and only class prototypes travel.

* prototypes: p_{i,c} = the mean of the L2-normalised features φ_i(x)/‖φ_i(x)‖ of client i's class-c samples;
* server: the global prototype of c is the unweighted mean of the uploaded p_{i,c} over the clients holding
  c (a class nobody uploaded this round keeps its last global prototype); it sends the global prototypes and
  every client's prototypes, a client's missing classes (and a client not heard from yet) padded with the
  global ones;
* client (from its second round; in its first it only computes prototypes): E epochs on
      L = L_g + L_p,  L_g = CE(f·Gᵀ/τ, y),  L_p = (1/N) Σ_j CE(f·P_jᵀ/τ, y),  f = φ_i(x)/‖φ_i(x)‖,
  the global-prototype and the client-prototype contrastive losses, with the gradient norm clipped to 10
  (PFLlib), then its prototypes from the trained φ_i;
* inference: the class of the most similar *own* prototype, f·p_{i,c} (classes it does not hold never win).

Upload: the k held classes' prototype rows and ids. Download: the global table and the N client tables
(N·C·D floats, shared by every client). τ defaults to 1 (PFLlib's ``-tau``).

Tables here are indexed by class. ``pfllib_compat = True`` reproduces PFLlib (serverpcl.py/clientpcl.py at
d832e76), which differs twice:
* its prototypes travel as dicts in insertion order, and its client stacks the global and every client dict
  in that order and indexes the stack with the label, so L_g and L_p pull a sample toward whichever class
  arrived at the label's position. A client's order is the order its classes first appear in its shuffled
  prototype pass, then (the server's padding) its missing classes by id; the global order is the order classes
  first appear over the clients in the round's selection order (a fresh permutation), and a client not heard
  from yet gets the global dict itself. The compat client sends its rows in that order (the same bytes) and the
  server stacks the tables in PFLlib's orders; the orders go down as two small index arrays.
* its server pads each client's own dict in place, and that dict is what the client is scored with: a class
  the client lacks scores against the global prototype instead of never winning.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation, Predictor,
                                     ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.seeding import torch_generator
from fedloom.pipeline.wire import Compact
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CLIP_NORM = 10.0  # PFLlib's clip_grad_norm_(…, 10)


def unit_features(apply: ApplyFn, params: Params, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(H.body(apply, params, x), dim=1)


def contrastive_loss(apply: ApplyFn, global_table: torch.Tensor, client_tables: torch.Tensor,
                     tau: float) -> Callable[..., torch.Tensor]:
    """Per-sample L_g + L_p against the global table [C, D] and the N padded client tables [N, C, D]."""

    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
        f = unit_features(apply, w, x)
        l_g = F.cross_entropy(f @ global_table.T / tau, y, reduction="none")
        logits = torch.einsum("bd,ncd->bnc", f, client_tables) / tau  # [B, N, C]
        targets = y.unsqueeze(1).expand(-1, client_tables.shape[0])
        l_p = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1)
        return l_g + l_p

    return loss


def nearest_own_prototype(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """Scores f·p_c over the client's own prototypes; classes it lacks just below its lowest score."""
    if "protos" not in tree:
        return apply(tree["params"], x)
    scores = unit_features(apply, tree["params"], x) @ tree["protos"].T
    held = tree["held"] > 0
    low = scores.masked_fill(~held, float("inf")).amin(1, keepdim=True) - 1
    return torch.where(held, scores, low.expand_as(scores))


def first_seen(ctx: ClientContext, held: torch.Tensor) -> torch.Tensor:
    """The held classes in the order they first appear in a shuffled pass over the client's training data
    (PFLlib's prototype dict is filled from its shuffled DataLoader)."""
    perm = torch.randperm(ctx.num_train_samples, generator=ctx.generator("fedpcl-insertion-order"))
    _, labels = ctx.data(ctx.train_indices[perm])
    seen: list[int] = []
    for label in labels.tolist():
        if label not in seen:
            seen.append(label)
    return torch.tensor([c for c in seen if held[c]], dtype=torch.long)


def ordered_rows_message(table: torch.Tensor, order: torch.Tensor) -> Compact:
    """``rows_message`` with the rows in ``order`` (a dict's insertion order): the same bytes; the decoded tree
    gains each class's position in the message ("rank")."""
    arrays = {"rows": table[order].float().contiguous(), "classes": order.to(H.class_id_dtype(table.shape[0]))}
    return Compact(arrays, functools.partial(decode_ordered_rows, classes=int(table.shape[0])))


def decode_ordered_rows(arrays: Any, classes: int) -> Tree:
    tree = H.decode_rows(arrays, classes)
    rank = torch.full((classes,), float(classes))
    rank[arrays["classes"].long()] = torch.arange(len(arrays["classes"]), dtype=torch.float32)
    return {**tree, "rank": rank}


def pfllib_orders(rank: torch.Tensor, held: torch.Tensor, selection: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(PFLlib's global row order [C], each client's row order [N, C]) from the clients' insertion ranks [N, C]
    and the round's selection order: global = classes as they first appear over the selected clients' dicts;
    a client = its own classes by rank, then its missing ones by id (the server's padding); a client never
    heard from = the global order (PFLlib hands it the global dict)."""
    n, c = held.shape
    g_order: list[int] = []
    for cid in selection:
        for k in own_order(rank[cid], held[cid]):
            if k not in g_order:
                g_order.append(k)
    g_order += [k for k in range(c) if k not in g_order]  # classes nobody holds (PFLlib would have no row)
    orders = []
    for cid in range(n):
        own = own_order(rank[cid], held[cid])
        orders.append(own + [k for k in range(c) if k not in own] if own else g_order)
    return torch.tensor(g_order), torch.tensor(orders)


def own_order(rank: torch.Tensor, held: torch.Tensor) -> list[int]:
    return [k for k in torch.argsort(rank, stable=True).tolist() if held[k] > 0]


@ALGORITHMS.register("fedpcl")
@dataclass(frozen=True)
class FedPCL(Algorithm):
    aggregation = "all"  # the server keeps every client's prototypes
    vectorizable = False  # the prototype pass is a per-client loop over its data
    needs_common_feature_dim = True
    shared_architecture = False  # prototypes, not parameters, travel
    tau: float = hp(1.0, gt=0, help="τ, temperature of both contrastive losses")
    pfllib_compat: bool = hp(False, help="PFLlib's insertion-ordered prototype stacks and padded scoring")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        state = ServerState(params={}, extra={"num_clients": torch.tensor(federation.num_clients),
                                              "seed": torch.tensor(getattr(init_params, "seed", 0))})
        return ServerResult(state, Broadcast(params={}))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        state = state if state is not None else self.init_client_state(ctx.init_params, ctx.client_id)
        params, metrics = state["params"], {}
        if "global" in broadcast.extra:  # PFLlib's first round only computes prototypes
            loss = contrastive_loss(ctx.apply, broadcast.extra["global"], broadcast.extra["clients"], self.tau)
            params, metrics = ctx.local_sgd(params, batch_loss=loss, trainable=is_body,
                                            grad_correction=H.clip_groups(CLIP_NORM))
        protos, held = H.class_means(ctx, params, lambda w, x: unit_features(ctx.apply, w, x), H.num_classes(ctx))
        new_state = {"params": params, "protos": protos, "held": held.float()}
        if self.pfllib_compat:
            upload = ordered_rows_message(protos, first_seen(ctx, held))
        else:
            upload = H.rows_message(protos, held)
        return ClientResult(upload=upload, state=new_state, weight=1.0, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        extra = dict(server.extra)
        if items:
            extra.update(self.tables(server.extra, items))
        state = server.replace(round=server.round + 1, extra=extra)
        if "global" not in extra:
            return ServerResult(state, Broadcast(params={}))
        padded = torch.where(extra["held"].unsqueeze(-1) > 0, extra["clients"], extra["global"].unsqueeze(0))
        if not self.pfllib_compat:
            return ServerResult(state, Broadcast(params={}, extra={"global": extra["global"], "clients": padded}))
        gen = torch_generator(int(server.extra["seed"]), server.round, -1, "fedpcl-pfllib-order")
        selection = torch.randperm(len(items), generator=gen).tolist()
        g_order, c_orders = pfllib_orders(extra["rank"], extra["held"], [items[q][0] for q in selection])
        stacked = padded[torch.arange(len(padded)).unsqueeze(1), c_orders]  # client i's rows in its order
        down = {"global": extra["global"][g_order], "clients": stacked,
                "client_orders": c_orders.to(H.class_id_dtype(len(g_order)))}
        return ServerResult(state, Broadcast(params={}, extra=down))

    @staticmethod
    def tables(memory: dict, items: list) -> dict:
        """The global table (this round's mean, older rows kept for classes nobody sent) and the client tables."""
        n = int(memory["num_clients"])
        first = items[0][1]["sum"]
        clients = memory.get("clients", torch.zeros(n, *first.shape))
        held = memory.get("held", torch.zeros(n, first.shape[0])).clone()
        clients = clients.clone()
        rank = memory.get("rank", torch.zeros(n, first.shape[0])).clone()
        for cid, up, _ in items:
            clients[cid], held[cid] = up["sum"], up["count"]
            rank[cid] = up.get("rank", rank[cid])
        total = torch.stack([up["sum"] for _, up, _ in items]).sum(0)
        count = torch.stack([up["count"] for _, up, _ in items]).sum(0)
        mean = total / count.clamp(min=1).unsqueeze(1)
        old = memory.get("global", torch.zeros_like(mean))
        return {"global": torch.where(count.unsqueeze(1) > 0, mean, old), "clients": clients, "held": held,
                "rank": rank}

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else {"params": ctx.init_params}
        if self.pfllib_compat and "client_orders" in broadcast.extra and "protos" in state:
            order = broadcast.extra["client_orders"][ctx.client_id].long()
            by_class = torch.empty_like(state["protos"])
            by_class[order] = broadcast.extra["clients"][ctx.client_id]  # the padded table, back in class order
            return Predictor({"params": state["params"], "protos": by_class, "held": torch.ones_like(state["held"])},
                             nearest_own_prototype)
        return Predictor(dict(state), nearest_own_prototype)
