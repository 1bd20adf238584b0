"""Pieces shared by the heterogeneous-model (HtFL) methods: per-class statistics of a client's features or
logits, their wire form, and the server's per-class means.

HtFL methods exchange knowledge that does not depend on the architecture: per-class prototypes (the mean body
output, C×D), per-class mean logits (C×C), a head or a small shared model. Every model is ``head(body(x))``
(``models.base.SplitModel``), so a client's features are ``ctx.apply(params, x, part="body")`` and its logits
from features ``ctx.apply(params, f, part="head")``, whatever its architecture.

Wire form of a per-class table (HtFLlib sends a dict ``{class: vector}`` of the classes a client holds): the
rows of the present classes and their class ids, ``Compact({"rows": float32[k, D], "classes": uint8|int16[k]})``;
it decodes to ``{"sum": [C, D], "count": [C]}`` (zero rows and counts for absent classes) so that the engines'
reducible weighted sum (weight 1 per client) gives the server Σ rows and the number of holders of each class:
their ratio is HtFLlib's unweighted mean over the clients that hold a class.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

from fedloom.algorithms.base import ApplyFn, Broadcast
from fedloom.algorithms.tree import Params, Tree
from fedloom.pipeline.wire import Compact, Payload

#: evaluation-size batches for the passes that compute class statistics (no gradients)
PASS_BATCH = 256
#: the distance given to classes without a global prototype, so that they are never the nearest
FAR = 1e9


def num_classes(ctx: Any) -> int:
    return int(ctx.train_label_counts().shape[-1])  # a pack's counts carry the client axis in front


def body(apply: ApplyFn, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The representation the head sees (the features), flattened to [B, D]."""
    return apply(params, x, "body").flatten(1)


def class_sums(ctx: Any, params: Params, fn: Callable[[Params, torch.Tensor], torch.Tensor],
               classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ fn(params, x) per class [C, D], samples per class [C]) over the client's training data, without
    gradients (``ctx.class_sums``: a pack returns them for all its clients, with the client axis in front)."""
    return ctx.class_sums(params, fn, classes, PASS_BATCH)


def class_means(ctx: Any, params: Params, fn: Callable[[Params, torch.Tensor], torch.Tensor],
                classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-class mean of fn(params, x) [C, D] (zero rows for absent classes), present mask [C] bool)."""
    sums, counts = class_sums(ctx, params, fn, classes)
    return sums / counts.clamp(min=1).unsqueeze(-1), counts > 0


def class_id_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type that holds a class id (on the wire)."""
    return torch.uint8 if num_classes <= 256 else torch.int16


def class_ids(present: torch.Tensor) -> torch.Tensor:
    """The ids of the present classes in the smallest integer type that holds them (as a class-keyed dict)."""
    return present.nonzero().flatten().to(class_id_dtype(present.numel()))


def rows_message(table: torch.Tensor, present: torch.Tensor) -> Compact:
    """The wire form of a per-class table: the present classes' rows and ids (see the module docstring)."""
    arrays = {"rows": table[present].float().contiguous(), "classes": class_ids(present)}
    return Compact(arrays, functools.partial(decode_rows, classes=int(present.numel())))


def rows_upload(ctx: Any, table: torch.Tensor, present: torch.Tensor) -> Any:
    """The client's upload of a per-class table: its ``rows_message``, built per client (``ctx.each_client``)
    since the rows a client sends depend on the classes it holds."""
    return ctx.each_client(rows_message, table, present)


def decode_rows(arrays: Payload, classes: int) -> Tree:
    rows, ids = arrays["rows"], arrays["classes"].long()
    total = torch.zeros(classes, rows.shape[1], device=rows.device)
    count = torch.zeros(classes, device=rows.device)
    total[ids] = rows
    count[ids] = 1.0
    return {"sum": total, "count": count}


def per_class_mean(uploads: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(unweighted mean per class over the clients holding it [C, D], present [C]) from uploads decoded by
    ``decode_rows`` and sent with weight 1; None when nobody uploaded."""
    if uploads.count == 0:
        return None
    if uploads.items is not None:
        items = [upload for _, upload, _ in uploads.items]
        total = torch.stack([u["sum"] for u in items]).sum(0)
        count = torch.stack([u["count"] for u in items]).sum(0)
    else:
        total, count = uploads.weighted_sum["sum"], uploads.weighted_sum["count"]
    present = count > 0
    return (total / count.clamp(min=1).unsqueeze(1)).float(), present


def uploaded_pairs(uploads: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every uploaded (row, class) pair, client by client in id order: what FedTGP's and FedGH's servers train
    on (needs ``aggregation = "all"``)."""
    rows, labels = [], []
    for _, upload, _ in uploads.all():
        present = upload["count"] > 0
        rows.append(upload["sum"][present])
        labels.append(present.nonzero().flatten())
    return torch.cat(rows).float(), torch.cat(labels)


def table_broadcast(table: Optional[torch.Tensor], present: Optional[torch.Tensor],
                    params: Optional[Params] = None) -> Broadcast:
    """A broadcast of a per-class table (global prototypes or logits) as ``extra`` {"table", "present"}, its
    bytes those of the present rows and their ids; no table yet: an empty broadcast."""
    params = params or {}
    if table is None:
        return Broadcast(params=params)
    extra = {"table": table, "present": present.float()}
    message = rows_message(table, present)
    arrays = {**message.arrays, **{f"params/{k}": v for k, v in params.items()}}
    return Broadcast(params=params, extra=extra, wire=Compact(arrays, dict))


def global_table(broadcast: Broadcast) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(table [C, D], present [C] bool) from a ``table_broadcast``; (None, None) before the first one."""
    if "table" not in broadcast.extra:
        return None, None
    return broadcast.extra["table"], broadcast.extra["present"] > 0


def nearest_prototype(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """FedProto/FedTGP inference: scores = −MSE(φ(x), P_c) per class, so the argmax is the nearest global
    prototype; classes without one are never chosen. Before any prototype exists: the model's head."""
    params = tree["params"]
    if "table" not in tree:
        return apply(params, x)
    feats = body(apply, params, x)
    protos, present = tree["table"], tree["present"] > 0
    dist = (feats.unsqueeze(1) - protos.unsqueeze(0)).pow(2).mean(-1)
    return -torch.where(present.unsqueeze(0), dist, torch.full_like(dist, FAR))


def proto_losses(apply: ApplyFn, table: Optional[torch.Tensor], present: Optional[torch.Tensor], lam: float,
                 w: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample CE(h(φ(x)), y) + λ·mean_d (φ(x) − P_y)² for samples whose class has a global prototype, the
    features φ(x)): averaged over the batch it is HtFLlib's CE + λ·MSELoss(φ with P_y substituted, φ)."""
    feats = body(apply, w, x)
    ce = torch.nn.functional.cross_entropy(apply(w, feats, "head"), y, reduction="none")
    if table is None or lam == 0:
        return ce, feats
    reg = (feats - table[y]).pow(2).mean(1) * present[y].float()
    return ce + lam * reg, feats


def proto_batch_loss(apply: ApplyFn, table: Optional[torch.Tensor], present: Optional[torch.Tensor],
                     lam: float) -> Callable[..., torch.Tensor]:
    """The batch loss of ``proto_losses`` (absent rows add 0)."""

    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
        return proto_losses(apply, table, present, lam, w, x, y)[0]

    return loss


def proto_collecting_loss(apply: ApplyFn, table: Optional[torch.Tensor], present: Optional[torch.Tensor],
                          lam: float) -> Callable[..., tuple[torch.Tensor, Any]]:
    """``proto_losses`` as a carry loss (``ctx.local_sgd_carry``) that also sums each class's features of every
    batch, before that batch's step: PFLlib/HtFLlib clientproto's prototypes, collected during training. The
    carry is {"sum": [C, D] float64, "count": [C]}."""

    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any, carry: Any) -> tuple[torch.Tensor, Any]:
        losses, feats = proto_losses(apply, table, present, lam, w, x, y)
        sums, counts = carry["sum"], carry["count"]
        # index_add rather than bincount for the counts: the same numbers, and it maps over a pack's clients
        return losses, {"sum": sums.index_add(0, y, feats.detach().to(sums.dtype)),
                        "count": counts.index_add(0, y, torch.ones_like(y, dtype=counts.dtype))}

    return loss


def shared_apply(ctx: Any) -> ApplyFn:
    """``apply`` of the federation's first architecture (client 0's): HtFLlib's ``args.global_model`` for the
    methods that share a small model (FML's meme, FedKD's mentee, FedMRL's shared model) when no separate global
    model is given. On a one-architecture federation it is the client's own."""
    return ctx.runtime.for_arch(0).apply


def kl(logits: torch.Tensor, target_logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample KL(softmax(target) ‖ softmax(logits)): ``batchmean`` (the papers' KL) or ``mean``
    (``nn.KLDivLoss()``'s default in HtFLlib: the mean over B×C elements, i.e. the per-sample KL / C)."""
    target = torch.nn.functional.softmax(target_logits, dim=1)
    out = (target * (torch.nn.functional.log_softmax(target_logits, dim=1)
                     - torch.nn.functional.log_softmax(logits, dim=1))).sum(dim=1)
    return out / logits.shape[1] if reduction == "mean" else out


def clip_groups(max_norm: float) -> Optional[Callable[..., Params]]:
    """A local-SGD ``grad_correction`` doing ``torch.nn.utils.clip_grad_norm_(group, max_norm)`` for each group of
    trained tensors: the model's own (untagged names) and each tagged module (``<tag>/...``), as HtFLlib clips
    each of its optimizers' parameter lists; None (no clipping) when ``max_norm`` is 0."""
    if max_norm <= 0:
        return None

    def correct(params: Params, grads: Params, aux: Any) -> Params:
        groups: dict[str, list[str]] = {}
        for name in grads:
            groups.setdefault(name.split("/", 1)[0] if "/" in name else "", []).append(name)
        out = {}
        for names in groups.values():
            total = torch.sqrt(sum(grads[n].detach().pow(2).sum() for n in names))
            scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
            out.update({n: grads[n] * scale for n in names})
        return out

    return correct
