"""FedKTL (J. Zhang, Y. Liu, Y. Hua, J. Cao, "An Upload-Efficient Scheme for Transferring Knowledge From a
Server-Side Pre-trained Generator to Clients in Heterogeneous Federated Learning", CVPR 2024, arXiv 2403.15760).
Official code: TsingZ0/FedKTL (also HtFLlib ``serverktl_*``/``clientktl``).

* Client model: its body and a projection head Linear(D, C) (the model's own head); predictions are the cosine
  of the L2-normalised output to a fixed simplex ETF of C class vectors (√(C/(C−1))·P·(I − 𝟙𝟙ᵀ/C), P a random
  orthogonal matrix from the run seed's "fedktl-etf" stream); trained with an ArcFace loss (the true class's
  cosine becomes cos(θ + m), all scaled by s) plus, once the server has generated images, the knowledge
  transfer term μ·MSE(proj(φ(x_G)), w_G) on batches cycled (shuffled) through the C generated (image, latent)
  pairs, where proj = Linear(D, w_dim) is the server's copy, trained with the model and discarded after the
  round (HtFLlib never keeps it);
* upload: per class, the normalised mean of the normalised outputs (C values per held class: C×C at most);
* server: a feature transformer F (Linear(C, C) → BatchNorm → ReLU → Linear(C, w_dim)) and class centroids
  (C × w_dim), set to the class means of F(P) (BatchNorm in eval mode); ``server_epochs`` passes of Adam
  (``server_lr``) over the uploaded (P, class) pairs in batches of ``server_batch_size`` on
  MMD_rbf(F(P), w) + λ·MSE(F(P), centroid_y), w = the generator's latents of random samples; the centroids are
  reset to the class means of F(P), and the generator decodes one image per class from them;
* download: the C generated images and their latents, proj's initial copy and the ETF;
* inference: argmax of the cosine to the ETF.

The generator is anything with ``sample_latents(n)`` and ``decode(w)`` (fedloom.models.generators): by default a
small VAE fedloom trains offline on a public image set (``public_data``), or StyleGAN-XL / StyleGAN3 / Stable
Diffusion from ``generator_path``. Generated images are brought to the client's input shape on the client
(channels, size), where HtFLlib resizes them on the server. Defaults (official StyleGAN-XL scripts): μ = 50,
λ = 1, server lr 0.01, server batch 100, 100 server epochs, m = 0.5, s = 64, gradient norms clipped at 100 (the
model and proj separately on the clients, F and the centroids separately on the server); arccos is taken of the cosine
clamped to (−1, 1) so that its gradient stays finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms._naming import tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation,
                                     Predictor, ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_head
from fedloom.models.generators import Adam, GeneratorSpec, check_spec, fit_images, load_generator
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

PROJ = "proj"
BN_MOMENTUM = 0.1


@ALGORITHMS.register("fedktl")
@dataclass(frozen=True)
class FedKTL(Algorithm):
    aggregation = "all"  # the server trains on every uploaded (prototype, class) pair
    vectorizable = False
    shared_architecture = False
    needs_common_feature_dim = True  # one proj = Linear(D, w_dim) for every client

    mu: float = hp(50.0, ge=0, help="weight μ of the knowledge-transfer MSE on generated images")
    lamda: float = hp(1.0, ge=0, help="weight λ of the centroid MSE in the server's alignment")
    server_lr: float = hp(0.01, gt=0, help="Adam learning rate of the feature transformer and centroids")
    server_batch_size: int = hp(100, ge=2, help="uploaded prototypes per server step")
    server_epochs: int = hp(100, ge=0, help="passes of alignment over the uploaded prototypes per round")
    margin: float = hp(0.5, ge=0, help="ArcFace angular margin m")
    scale: float = hp(64.0, gt=0, help="ArcFace scale s")
    clip_norm: float = hp(100.0, ge=0, help="gradient-norm clipping of the model and of proj (official: 100)")
    generator: str = hp("small-vae", help="small-vae, stylegan-xl, stylegan3 or stable-diffusion")
    generator_path: str = hp("", help="local checkpoint of a pre-trained generator (not for small-vae)")
    public_data: str = hp("digits", help="image dataset the small VAE generator is trained on, offline")
    w_dim: int = hp(64, ge=1, help="latent width of the small VAE generator")
    generator_epochs: int = hp(30, ge=1, help="training epochs of the small VAE generator (cached)")

    def validate(self) -> None:
        super().validate()
        check_spec(self.spec(0))  # an unknown kind or a missing checkpoint: one line before training

    def spec(self, seed: int) -> GeneratorSpec:
        """The generator's identity; a pre-trained checkpoint does not depend on the run seed."""
        kind = self.generator.strip().lower()
        return GeneratorSpec(kind=kind, path=self.generator_path, public_data=self.public_data, w_dim=self.w_dim,
                             epochs=self.generator_epochs, seed=seed if kind == "small-vae" else 0)

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        seed = int(getattr(init_params, "seed", 0))
        classes = num_outputs(init_params)
        dim = init_params.template.feature_dim
        w_dim = load_generator(self.spec(seed)).w_dim
        gen = torch_generator(seed, -1, -1, "fedktl-init")
        extra = {"etf": simplex_etf(classes, torch_generator(seed, -1, -1, "fedktl-etf")),
                 "proj": linear_init(dim, w_dim, gen)}
        server = {"seed": torch.tensor(seed), "transformer": transformer_init(classes, w_dim, gen),
                  "centroids": torch.randn(classes, w_dim, generator=gen), **extra}
        return ServerResult(state=ServerState(params={}, extra=server), broadcast=Broadcast(params={}, extra=extra))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1, extra=dict(server.extra))
        keep = {k: server.extra[k] for k in ("etf", "proj", "images", "latents") if k in server.extra}
        if uploads.count == 0:
            return ServerResult(state=state, broadcast=Broadcast(params={}, extra=keep))
        protos, labels = H.uploaded_pairs(uploads)
        seed = int(server.extra["seed"])
        G = load_generator(self.spec(seed))
        gen = torch_generator(seed, state.round, -1, "fedktl-server")
        transformer, centroids, loss = self.align(server.extra["transformer"], server.extra["centroids"], protos,
                                                  labels, G, gen)
        with torch.no_grad():
            images = G.decode(centroids)
        state.extra.update(transformer=transformer, centroids=centroids, images=images, latents=centroids)
        extra = {"etf": server.extra["etf"], "proj": server.extra["proj"], "images": images, "latents": centroids}
        return ServerResult(state=state, broadcast=Broadcast(params={}, extra=extra), metrics={"align_loss": loss})

    def align(self, transformer: Params, centroids: torch.Tensor, protos: torch.Tensor, labels: torch.Tensor,
              G: Any, gen: torch.Generator) -> tuple[Params, torch.Tensor, float]:
        """Adam on F and the centroids: MMD(F(P), w) + λ·MSE(F(P), centroid_y); centroids reset to class means."""
        t = {k: v.detach().clone() for k, v in transformer.items()}
        cents = class_centroids(transformer_forward(t, protos, train=False), labels, centroids.detach().clone())
        trained = [t[k] for k in TRAINED] + [cents]
        for tensor in trained:
            tensor.requires_grad_(True)
        adam = Adam(trained, self.server_lr)
        last = float("nan")
        n = protos.shape[0]
        for _ in range(self.server_epochs):
            order = torch.randperm(n, generator=gen).to(protos.device)
            batches = list(order.split(self.server_batch_size))
            if n % self.server_batch_size == 1 and len(batches) > 1:
                batches = batches[:-1]  # BatchNorm cannot train on one sample (the official drop_last rule)
            for batch in batches:
                q = transformer_forward(t, protos[batch], train=True)
                w = G.sample_latents(batch.numel(), gen).to(q.device).detach()
                loss = mmd_rbf(q, w) + self.lamda * F.mse_loss(q, cents[labels[batch]])
                grads = torch.autograd.grad(loss, trained)
                adam.step(clip_parts(grads, len(TRAINED), self.clip_norm))
                last = float(loss.detach())
        t = {k: v.detach() for k, v in t.items()}
        cents = class_centroids(transformer_forward(t, protos, train=False), labels, cents.detach())
        return t, cents, last

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        etf = broadcast.extra["etf"]
        proj = broadcast.extra["proj"]
        transfer = None
        if "images" in broadcast.extra and self.mu > 0:
            x0, _ = ctx.data(ctx.train_indices[:1])
            images = fit_images(broadcast.extra["images"], tuple(x0.shape[1:])).to(x0.dtype)
            transfer = GeneratedBatches(images, broadcast.extra["latents"], ctx.sgd.batch_size,
                                        ctx.generator("fedktl-generated"))
        start = {**state["params"], **(tagged(PROJ, proj) if transfer is not None else {})}
        trained, metrics = ctx.local_sgd(start, batch_loss=self.loss(ctx.apply, etf, transfer),
                                         grad_correction=H.clip_groups(self.clip_norm))
        model = {k: v for k, v in trained.items() if "/" not in k}
        protos, held = H.class_means(ctx, model, lambda w, x: F.normalize(ctx.apply(w, x), dim=1),
                                     H.num_classes(ctx))
        protos = F.normalize(protos, dim=1) * held.unsqueeze(1)
        return ClientResult(upload=H.rows_message(protos, held), state={"params": model}, weight=1.0,
                            metrics=metrics)

    def loss(self, apply: ApplyFn, etf: torch.Tensor, transfer: Optional["GeneratedBatches"]) -> Any:
        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            model = {k: v for k, v in w.items() if "/" not in k}
            cosine = etf_cosine(apply(model, x), etf)
            loss = arcface(cosine, y, self.margin, self.scale)
            if transfer is not None:
                xg, wg = transfer.next()
                proj = untagged(PROJ, w)
                out = F.linear(H.body(apply, model, xg), proj["weight"], proj["bias"])
                loss = loss + self.mu * F.mse_loss(out, wg)
            return loss

        return batch_loss

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        params = state["params"] if state is not None else ctx.init_params
        return Predictor({"params": params, "etf": broadcast.extra["etf"], "scale": torch.tensor(self.scale)},
                         predict)


def predict(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """s · cos(normalised output, ETF class vectors): the argmax is the nearest ETF vector."""
    return tree["scale"] * etf_cosine(apply(tree["params"], x), tree["etf"])


# ------------------------------------------------------------------------------------------------ pieces
class GeneratedBatches:
    """The generated (image, latent) pairs cycled in shuffled batches (a DataLoader(shuffle=True) restarted
    whenever it runs out), from the client's own stream."""

    def __init__(self, images: torch.Tensor, latents: torch.Tensor, batch_size: int,
                 generator: torch.Generator) -> None:
        self.images, self.latents, self.batch_size, self.generator = images, latents, batch_size, generator
        self.queue: list[torch.Tensor] = []

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.queue:
            order = torch.randperm(self.images.shape[0], generator=self.generator)
            self.queue = list(order.split(self.batch_size))
        batch = self.queue.pop(0).to(self.images.device)
        return self.images[batch], self.latents[batch]


def num_outputs(init_params: Params) -> int:
    """C: the output rows of the head's last matrix (a Linear(D, C) head, or a ViT's Linear-Tanh-Linear)."""
    matrices = [v for k, v in tree_select(init_params, is_head).items() if v.dim() == 2]
    return int(matrices[-1].shape[0])


def simplex_etf(classes: int, gen: torch.Generator) -> torch.Tensor:
    """The C class vectors (rows, unit norm) of a simplex ETF √(C/(C−1))·P·(I − 𝟙𝟙ᵀ/C), P orthogonal (QR of a
    uniform random matrix, as the official code)."""
    P, _ = torch.linalg.qr(torch.rand(classes, classes, generator=gen, dtype=torch.float64))
    M = math.sqrt(classes / (classes - 1)) * P @ (torch.eye(classes, dtype=torch.float64)
                                                  - torch.ones(classes, classes, dtype=torch.float64) / classes)
    return F.normalize(M.T.float(), dim=1)


def etf_cosine(out: torch.Tensor, etf: torch.Tensor) -> torch.Tensor:
    return F.linear(F.normalize(out, dim=1), etf.to(out.device))


def arcface(cosine: torch.Tensor, y: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """Per-sample CE(s·[cos θ_c, with cos(θ_y + m) for the true class], y)."""
    one_hot = F.one_hot(y, cosine.shape[1]).to(cosine.dtype)
    shifted = torch.cos(torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7)) + margin)
    return F.cross_entropy(scale * (one_hot * shifted + (1 - one_hot) * cosine), y, reduction="none")


def mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The official empirical MMD with a sum of RBF kernels exp(−d²/(2a)), a ∈ {10, 15, 20, 50}: mean(XX + YY − 2XY)."""
    dxx, dyy, dxy = torch.cdist(x, x).pow(2), torch.cdist(y, y).pow(2), torch.cdist(x, y).pow(2)
    total = torch.zeros_like(dxx)
    for a in (10.0, 15.0, 20.0, 50.0):
        total = total + torch.exp(-0.5 * dxx / a) + torch.exp(-0.5 * dyy / a) - 2 * torch.exp(-0.5 * dxy / a)
    return total.mean()


def clip_parts(grads: tuple[torch.Tensor, ...], split: int, max_norm: float) -> list[torch.Tensor]:
    """clip_grad_norm_ of the first ``split`` gradients (F) and of the rest (the centroids), separately."""
    if max_norm <= 0:
        return list(grads)
    out: list[torch.Tensor] = []
    for part in (grads[:split], grads[split:]):
        total = torch.sqrt(sum(g.pow(2).sum() for g in part))
        out += [g * (max_norm / (total + 1e-6)).clamp(max=1.0) for g in part]
    return out


TRAINED = ("fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias")


def linear_init(fan_in: int, fan_out: int, gen: torch.Generator) -> Params:
    bound = 1 / math.sqrt(fan_in)
    return {"weight": (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound,
            "bias": (torch.rand(fan_out, generator=gen) * 2 - 1) * bound}


def transformer_init(classes: int, w_dim: int, gen: torch.Generator) -> Params:
    fc1, fc2 = linear_init(classes, classes, gen), linear_init(classes, w_dim, gen)
    return {"fc1.weight": fc1["weight"], "fc1.bias": fc1["bias"], "bn.weight": torch.ones(classes),
            "bn.bias": torch.zeros(classes), "bn.running_mean": torch.zeros(classes),
            "bn.running_var": torch.ones(classes), "fc2.weight": fc2["weight"], "fc2.bias": fc2["bias"]}


def transformer_forward(t: Params, x: torch.Tensor, train: bool) -> torch.Tensor:
    """F(P); in training mode BatchNorm uses the batch's statistics and updates the running ones in place."""
    h = F.linear(x, t["fc1.weight"], t["fc1.bias"])
    h = F.batch_norm(h, t["bn.running_mean"], t["bn.running_var"], t["bn.weight"], t["bn.bias"], training=train,
                     momentum=BN_MOMENTUM)
    return F.linear(F.relu(h), t["fc2.weight"], t["fc2.bias"])


def class_centroids(q: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Centroid rows of the classes present replaced by their mean of q; the others kept."""
    sums = torch.zeros_like(centroids).index_add_(0, labels, q.detach())
    counts = torch.zeros(centroids.shape[0], device=q.device).index_add_(0, labels, torch.ones_like(labels,
                                                                                                  dtype=q.dtype))
    present = counts > 0
    out = centroids.clone()
    out[present] = sums[present] / counts[present].unsqueeze(1)
    return out
