"""VHL (Tang, Zhang, Shi, He, Han, Chu, "Virtual Homogeneity Learning: Defending against Data Heterogeneity in
Federated Learning", ICML 2022; official code github.com/wizard1203/VHL).

The server generates a virtual dataset once, from pure noise through an untrained generator
(``_virtual_data.py``), and every client downloads it once (its bytes are counted in the round each client
first trains: the server sends it to clients it has not heard from yet). The classifier gets C_v extra outputs
(label style "extra": virtual class c is label C + c), here an extra linear head on the model's features trained
and averaged with the model. Each local step draws a virtual batch and minimises

    CE(f(x), y) + α·CE(f(x_v), y_v + C) + w_cls·SupCon(real ∪ virtual) + w_nc·SupCon(virtual)

where SupCon is the supervised contrastive loss (Khosla et al., 2020) on ℓ2-normalised features at temperature
τ, the real ∪ virtual term treats virtual class c as real class c (c mod C) with the virtual features detached,
pulling every client's class-c features toward one shared anchor. VHL composes with a base federated optimiser
(``--vhl.base fedavg | fedprox | scaffold | fednova``, as the official repo combines them): the base's client
and server halves run unchanged, VHL only adds its loss to the base's local SGD (and its head to the model).
Evaluation uses the model's C real-class outputs.

Deviations (docs/algorithms.md): a small untrained conv generator instead of StyleGAN-v2; the virtual batch is
the local batch size by default (the repo's 128 virtual with 128 real, the same 1:1 ratio); the alignment runs
in every local epoch.

Engines: the virtual batch's indices are the loss's per-step draws (StepDraws, the client's "vhl-virtual"
stream) and the loss couples a batch's samples (SupCon), so a vectorized pack steps partial batches without
padding; the personal download is only a cache of data every client can regenerate from the broadcast's spec
(``personal_recomputable``), so a pack leaves it out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms._naming import tag_name
from fedloom.algorithms._virtual_data import virtual_dataset
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.draws import StepDraws
from fedloom.algorithms.tree import Params, Tree
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

BASES = ("fedavg", "fedprox", "scaffold", "fednova")
# no "." in the names: functional_call would look for a submodule "vhl/head"
HEAD_W, HEAD_B = tag_name("vhl", "head_weight"), tag_name("vhl", "head_bias")


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float,
                base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020) over ℓ2-normalised features: for each anchor with
    at least one positive, −(τ/τ_b)·mean over its positives p of log softmax_{a≠i}(z_i·z_a/τ)[p]."""
    z = F.normalize(features, dim=1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(1)
    mean_log_pos = log_prob.masked_fill(~positives, 0.0).sum(1) / count.clamp_min(1)
    # the mean over anchors with a positive, without data-dependent control flow (it runs under vmap)
    has = (count > 0).to(mean_log_pos.dtype)
    anchors = has.sum()
    value = -(temperature / base_temperature) * (mean_log_pos * has).sum() / anchors.clamp_min(1)
    return torch.where(anchors > 0, value, z.sum() * 0.0)


class _WithLoss:
    """The client context the base algorithm sees: every ``local_sgd`` call trains with VHL's batch loss."""

    def __init__(self, ctx: Any, batch_loss: Any) -> None:
        self._ctx, self._batch_loss = ctx, batch_loss

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def local_sgd(self, params: Params, **options: Any) -> Any:
        if options.get("batch_loss") is not None:
            raise ConfigError("vhl.base replaces the batch loss itself; VHL cannot add its loss to it")
        loss, draws = self._batch_loss
        return self._ctx.local_sgd(params, batch_loss=loss, draws=draws, coupled=True, **options)


@ALGORITHMS.register("vhl")
@dataclass(frozen=True)
class VHL(Algorithm):
    aggregation: ClassVar[str] = "all"  # the server sees who uploaded, so it sends the virtual data only once
    personal_recomputable: ClassVar[bool] = True  # the download is the dataset the spec regenerates
    couples_batch_samples: ClassVar[bool] = True  # SupCon over the batch's real and virtual features

    base: str = hp("fedavg", choices=BASES, help="federated optimiser VHL runs on (its client and server halves)")
    alpha: float = hp(1.0, ge=0, help="α: weight of the cross-entropy on virtual data (labels shifted by C)")
    align_weight: float = hp(1.0, ge=0, help="w_cls: SupCon over real ∪ virtual features (virtual c = real c)")
    noise_weight: float = hp(0.1, ge=0, help="w_nc: SupCon among the virtual features")
    temperature: float = hp(0.07, gt=0, help="τ of both SupCon terms (base temperature 0.07)")
    virtual_classes: int = hp(10, ge=1, help="C_v: virtual classes (the repo's VHL_num)")
    per_class: int = hp(200, ge=1, help="virtual samples per class (the repo's default script)")
    virtual_batch: int = hp(0, ge=0, help="virtual samples per local step; 0: the local batch size")
    mu: float = hp(0.01, ge=0, help="μ of --vhl.base fedprox")
    global_lr: float = hp(1.0, gt=0, help="η_g of --vhl.base scaffold or fednova")

    def base_algorithm(self) -> Algorithm:
        """The base optimiser with the options VHL forwards to it (those it declares under the same name)."""
        cls = ALGORITHMS.get(self.base)
        own = {f.name for f in dataclasses.fields(self)} - {"base"}
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls) if f.name in own})

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        if not federation.input_shape or federation.num_classes < 1:
            raise ConfigError("vhl needs the task's input shape and class count to generate its virtual data")
        result = self.base_algorithm().init_server(self.with_head(init_params), federation)
        spec = torch.tensor([getattr(init_params, "seed", 0), federation.num_classes, *federation.input_shape])
        extra = {**result.state.extra, "vhl_spec": spec, "vhl_delivered": torch.zeros(federation.num_clients)}
        state = result.state.replace(extra=extra)
        return ServerResult(state, self._deliver(result.broadcast, state), result.metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        delivered = server.extra["vhl_delivered"].clone()
        for client_id, _, _ in uploads.all():
            delivered[client_id] = 1.0  # it trained, so it holds the virtual data now
        result = self.base_algorithm().server_update(server, uploads)
        state = result.state.replace(extra={**result.state.extra, "vhl_delivered": delivered})
        return ServerResult(state, self._deliver(result.broadcast, state), result.metrics)

    def _deliver(self, broadcast: Broadcast, state: ServerState) -> Broadcast:
        """The base's broadcast plus the virtual dataset's id; the data itself, as a personal download, to every
        client that has not trained yet (counted once per client)."""
        spec = state.extra["vhl_spec"]
        x, y = self.virtual_data(spec)
        pending = [int(c) for c in torch.nonzero(state.extra["vhl_delivered"] == 0).flatten()]
        personal = {c: {"x": x, "y": y} for c in pending} or None
        return Broadcast(broadcast.params, {**broadcast.extra, "vhl_spec": spec}, personal, broadcast.wire)

    def virtual_data(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seed, shape = int(spec[0]), tuple(int(s) for s in spec[2:])
        return virtual_dataset(seed, shape, self.virtual_classes, self.per_class)

    def with_head(self, init_params: Params) -> Params:
        """The model's parameters plus the C_v virtual-class outputs (a linear head on the same features),
        initialised like nn.Linear from the (seed, "vhl-head") stream."""
        width = init_params["head.weight"].shape[1] if "head.weight" in init_params else None
        template = getattr(init_params, "template", None)
        width = getattr(template, "feature_dim", width)
        if width is None:
            raise ConfigError("vhl needs a model with a known feature width (SplitModel.feature_dim)")
        g = init_params.generator("vhl-head") if hasattr(init_params, "generator") else torch.Generator()
        bound = 1.0 / width ** 0.5
        device = next(iter(init_params.values())).device
        weight = (torch.rand(self.virtual_classes, width, generator=g) * 2 - 1) * bound
        bias = (torch.rand(self.virtual_classes, generator=g) * 2 - 1) * bound
        params = dict(init_params)
        params.update({HEAD_W: weight.to(device), HEAD_B: bias.to(device)})
        return params

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return self.base_algorithm().init_client_state(self.with_head(init_params), client_id)

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        # the downloaded dataset is the one the spec regenerates (cached): the same tensors on every engine
        x_v, y_v = self.virtual_data(broadcast.extra["vhl_spec"])
        classes = int(broadcast.extra["vhl_spec"][1])
        loss = self.batch_loss(ctx, x_v.to(broadcast.params[HEAD_W].device), y_v.to(x_v.device), classes)
        return self.base_algorithm().client_update(_WithLoss(ctx, loss), broadcast, state)

    def batch_loss(self, ctx: ClientContext, x_v: torch.Tensor, y_v: torch.Tensor,
                   classes: int) -> tuple[Any, StepDraws]:
        """The local objective per step (per real sample: its CE plus the batch's virtual and alignment terms)
        and its draws: the virtual batch's indices, from the client's "vhl-virtual" stream."""
        size = self.virtual_batch or ctx.sgd.batch_size
        draws = StepDraws("vhl-virtual", lambda g, _: torch.randint(x_v.shape[0], (size,), generator=g))

        def loss(w: Params, xb: torch.Tensor, yb: torch.Tensor, aux: Any, pick: torch.Tensor) -> torch.Tensor:
            pick = pick.to(x_v.device)
            xv, yv = x_v[pick], y_v[pick]
            feats = ctx.apply(w, torch.cat([xb, xv]), part="body")
            logits = extended_logits(ctx, w, feats)
            real, virt = logits[: xb.shape[0]], logits[xb.shape[0]:]
            f_real, f_virt = feats[: xb.shape[0]], feats[xb.shape[0]:]
            shared = self.alpha * F.cross_entropy(virt, virtual_targets(yv, classes))
            if self.align_weight:
                both = torch.cat([f_real, f_virt.detach()])
                shared = shared + self.align_weight * supcon_loss(both, torch.cat([yb, yv % classes]),
                                                                  self.temperature)
            if self.noise_weight:
                shared = shared + self.noise_weight * supcon_loss(f_virt, yv, self.temperature)
            return ctx.task_loss(real, yb) + shared

        return loss, draws


def virtual_targets(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """VHL's "extra" label style: virtual class c is output C + c of the extended classifier."""
    return labels + classes


def extended_logits(ctx: Any, w: Params, feats: torch.Tensor) -> torch.Tensor:
    """[C real logits | C_v virtual logits] of some features: the model's head, then VHL's."""
    return torch.cat([ctx.apply(w, feats, part="head"), feats @ w[HEAD_W].T + w[HEAD_B]], dim=1)
