"""Pre-trained image generators for FedKTL (Zhang et al., "An Upload-Efficient Scheme for Transferring Knowledge
From a Server-Side Pre-trained Generator to Clients in Heterogeneous Federated Learning", CVPR 2024).

FedKTL needs only this interface of a generator, with a fixed latent width ``w_dim``:

* ``sample_latents(n, generator) -> [n, w_dim]``: latent vectors of random samples (StyleGAN: the mapping
  network's w for random z; a VAE: draws from its prior);
* ``decode(w) -> [n, channels, H, W]``: images in [−1, 1] (the range fedloom's image datasets and HtFLlib's
  client transform use).

Kinds, registered by name in GENERATORS:

* ``small-vae`` (default, no checkpoint needed): a small MLP variational auto-encoder that fedloom trains
  itself, offline, on a public image dataset named by the run (``--fedktl.public-data``, default scikit-learn's
  digits, which ships with fedloom's dependencies); trained from the run seed's "fedktl-vae" stream, cached on
  disk (``$FEDLOOM_CACHE/generators``) and in the process, so every worker and every resumed run uses the same
  weights. Its decoder is the generator; the paper notes that the transfer works whatever the pre-training data.
* ``stylegan-xl`` / ``stylegan3``: NVIDIA pickles (``G_ema``; e.g. StyleGAN-XL ImageNet-64, FedKTL's default,
  or StyleGAN3 Benches-512) from a local path; unpickling needs NVIDIA's ``dnnlib``/``torch_utils`` on the
  Python path, as in the official repos.
* ``stable-diffusion``: a local diffusers folder of Stable Diffusion v1.5; its VAE latent space (4×64×64,
  flattened) is the latent space and the VAE decoder the generator (needs ``pip install diffusers``).

No checkpoint can be downloaded here: the loaders are exercised by their missing-path error and the interface.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch
import torch.nn.functional as F

from fedloom.errors import ConfigError
from fedloom.registry import Registry
from fedloom.seeding import torch_generator


class ImageGenerator(Protocol):
    w_dim: int

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor: ...
    def decode(self, w: torch.Tensor) -> torch.Tensor: ...


GENERATORS: Registry[Callable[..., ImageGenerator]] = Registry("generator")


@dataclass(frozen=True)
class GeneratorSpec:
    """What names a generator: its kind, a checkpoint path (pre-trained kinds) and, for the small VAE, the public
    dataset, the latent width, its training epochs and the run seed."""

    kind: str = "small-vae"
    path: str = ""
    public_data: str = "digits"
    w_dim: int = 64
    epochs: int = 30
    seed: int = 0
    cache_dir: str = ""


def check_spec(spec: GeneratorSpec) -> None:
    """ConfigError before training for an unknown kind or a missing checkpoint."""
    GENERATORS.get(spec.kind)
    if spec.kind == "small-vae":
        return
    if not spec.path:
        raise ConfigError(f"fedktl.generator {spec.kind} needs a local checkpoint: set --fedktl.generator-path "
                          f"(or use --fedktl.generator small-vae, which fedloom trains itself)")
    if not Path(spec.path).expanduser().exists():
        raise ConfigError(f"fedktl.generator-path {spec.path} does not exist ({spec.kind} checkpoint)")


@functools.lru_cache(maxsize=4)
def load_generator(spec: GeneratorSpec) -> ImageGenerator:
    """The generator ``spec`` names, built once per process (a pure function of the spec)."""
    check_spec(spec)
    return GENERATORS.get(spec.kind)(spec)


# ------------------------------------------------------------------------------------------------ small VAE
@dataclass
class SmallVAE:
    """Decoder of an MLP VAE: w ~ N(0, I) → Linear(hidden) → ReLU → Linear(C·H·W) → tanh."""

    params: dict[str, torch.Tensor]
    shape: tuple[int, ...]
    w_dim: int

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.w_dim, generator=generator)

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        p = {k: v.to(w.device) for k, v in self.params.items()}
        return torch.tanh(_mlp(p, "dec", w)).reshape(w.shape[0], *self.shape)


@GENERATORS.register("small-vae")
def small_vae(spec: GeneratorSpec) -> SmallVAE:
    images = public_images(spec.public_data, spec.seed)
    key = hashlib.sha256(repr((spec.public_data, tuple(images.shape), spec.w_dim, spec.epochs, spec.seed,
                               VAE_VERSION)).encode()).hexdigest()[:16]
    root = Path(spec.cache_dir).expanduser() if spec.cache_dir else _default_cache() / "generators"
    path = root / f"small-vae-{spec.public_data}-{key}.pt"
    if path.is_file():
        params = torch.load(path, map_location="cpu", weights_only=True)
    else:
        params = train_vae(images, spec.w_dim, spec.epochs, spec.seed)
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(params)}")
        torch.save(params, tmp)
        tmp.replace(path)  # atomic: concurrent workers write the same bytes
    return SmallVAE({k: v for k, v in params.items() if k.startswith("dec.")}, tuple(images.shape[1:]),
                    spec.w_dim)


VAE_VERSION = 1
VAE_HIDDEN = 256
VAE_MAX_IMAGES = 10000


def public_images(name: str, seed: int) -> torch.Tensor:
    """Up to VAE_MAX_IMAGES images of a registered image dataset (a fixed seeded subset), in [−1, 1]."""
    from fedloom.data.base import DATASETS, LoadContext

    import fedloom.data.datasets  # noqa: F401  (registration)

    spec = DATASETS.get(name)
    pooled = spec().load(LoadContext(data_dir=None, seed=seed, num_clients=1))
    if pooled.x.dim() != 4:
        raise ConfigError(f"fedktl.public-data {name} is not an image dataset (samples of shape "
                          f"{tuple(pooled.x.shape[1:])})")
    x = pooled.x.float()
    if x.shape[0] > VAE_MAX_IMAGES:
        x = x[torch.randperm(x.shape[0], generator=torch_generator(seed, -1, -1, "fedktl-public"))[:VAE_MAX_IMAGES]]
    return x.clamp(-1, 1)


def train_vae(images: torch.Tensor, w_dim: int, epochs: int, seed: int) -> dict[str, torch.Tensor]:
    """An MLP VAE (Kingma & Welling, 2014) trained with Adam (lr 1e-3, batch 128) on MSE reconstruction + KL."""
    gen = torch_generator(seed, -1, -1, "fedktl-vae")
    flat = images.reshape(images.shape[0], -1)
    d = flat.shape[1]
    params = {**_linear("enc.0", d, VAE_HIDDEN, gen), **_linear("enc.1", VAE_HIDDEN, 2 * w_dim, gen),
              **_linear("dec.0", w_dim, VAE_HIDDEN, gen), **_linear("dec.1", VAE_HIDDEN, d, gen)}
    work = {k: v.requires_grad_(True) for k, v in params.items()}
    adam = Adam(list(work.values()), 1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(flat.shape[0], generator=gen).split(128):
            x = flat[batch]
            mu, logvar = _mlp(work, "enc", x).chunk(2, dim=1)
            w = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
            recon = torch.tanh(_mlp(work, "dec", w))
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
            loss = ((recon - x).pow(2).sum(1) + kl).mean()
            adam.step(torch.autograd.grad(loss, list(work.values())))
    return {k: v.detach() for k, v in work.items()}


def _linear(name: str, fan_in: int, fan_out: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation
    return {f"{name}.weight": (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound,
            f"{name}.bias": (torch.rand(fan_out, generator=gen) * 2 - 1) * bound}


def _mlp(p: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    h = F.relu(F.linear(x, p[f"{prefix}.0.weight"], p[f"{prefix}.0.bias"]))
    return F.linear(h, p[f"{prefix}.1.weight"], p[f"{prefix}.1.bias"])


def _default_cache() -> Path:
    from fedloom.data.cache import default_cache_dir

    return default_cache_dir()


# ------------------------------------------------------------------------------------------------ checkpoints
class StyleGANGenerator:
    """An NVIDIA StyleGAN-XL / StyleGAN3 ``G_ema``: latents are the mapping network's w of random z (class
    vector zero for conditional models), images the synthesis network's output for w broadcast to every layer."""

    def __init__(self, G: Any) -> None:
        self.G = G.eval().requires_grad_(False)
        self.w_dim = int(G.w_dim)

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        device = next(self.G.parameters()).device
        z = torch.randn(n, self.G.z_dim, generator=generator).to(device)
        c = torch.zeros(n, getattr(self.G, "c_dim", 0), device=device)
        with torch.no_grad():
            return self.G.mapping(z, c)[:, 0, :]

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ws = w.unsqueeze(1).repeat(1, self.G.num_ws, 1)
            return self.G.synthesis(ws, noise_mode="const").clamp(-1, 1)


def _stylegan(spec: GeneratorSpec) -> StyleGANGenerator:
    try:
        with open(Path(spec.path).expanduser(), "rb") as handle:
            G = pickle.load(handle)["G_ema"]
    except ModuleNotFoundError as exc:
        raise ConfigError(f"fedktl.generator {spec.kind}: unpickling {spec.path} needs NVIDIA's {exc.name} on "
                          f"the Python path (the stylegan-xl / stylegan3 repository's dnnlib and torch_utils)") from None
    except (KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise ConfigError(f"fedktl.generator-path {spec.path} is not a StyleGAN pickle with G_ema ({exc})") from None
    return StyleGANGenerator(G)


GENERATORS.register("stylegan-xl")(_stylegan)
GENERATORS.register("stylegan3")(_stylegan)


class StableDiffusionGenerator:
    """Stable Diffusion v1.5's VAE: latents 4×64×64 (flattened) drawn from N(0, I), decoded by the VAE decoder."""

    SCALE = 0.18215  # Stable Diffusion's latent scaling factor

    def __init__(self, vae: Any) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.w_dim = 4 * 64 * 64

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.w_dim, generator=generator)

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.decode(w.reshape(-1, 4, 64, 64) / self.SCALE).sample.clamp(-1, 1)


@GENERATORS.register("stable-diffusion")
def _stable_diffusion(spec: GeneratorSpec) -> StableDiffusionGenerator:
    from fedloom.extras import require

    diffusers = require("diffusers", "diffusion", "fedktl.generator stable-diffusion")
    vae = diffusers.AutoencoderKL.from_pretrained(str(Path(spec.path).expanduser()), subfolder="vae",
                                                  local_files_only=True)
    return StableDiffusionGenerator(vae)


# ------------------------------------------------------------------------------------------------ helpers
def fit_images(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Generated images brought to a client's input shape [C, H, W]: channels averaged (RGB → 1) or repeated
    (1 → RGB), then resized (bilinear) to H×W — HtFLlib's client transform resizes and centre-crops."""
    channels, height, width = shape
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images[:, :1].repeat(1, channels, 1, 1)
    if tuple(images.shape[2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return images


class Adam:
    """torch.optim.Adam's update (no weight decay) on a list of tensors, written out because importing
    torch.optim pulls in torch._dynamo (seconds of start-up in every process that trains on a server)."""

    def __init__(self, tensors: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.tensors, self.lr, self.betas, self.eps, self.t = tensors, lr, betas, eps, 0
        self.m = [torch.zeros_like(t) for t in tensors]
        self.v = [torch.zeros_like(t) for t in tensors]

    def step(self, grads: tuple[torch.Tensor, ...] | list[Optional[torch.Tensor]]) -> None:
        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for tensor, grad, m, v in zip(self.tensors, grads, self.m, self.v):
                if grad is None:
                    continue
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
                tensor.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))
