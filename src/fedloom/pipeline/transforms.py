"""Client-side upload transforms, registered by name and chained in the config (``--transform clip,topk``).

A transform has two halves, like an algorithm:
* ``apply(tctx, upload, state) -> (upload, state)`` changes what the client sends (clipping, noise, the
  sparsification itself); ``state`` is the transform's own per-client memory (top-k's error-feedback residual),
  kept by the engine beside the algorithm's state; randomness only from ``tctx.generator()``;
* ``encode(payload, tctx) -> payload`` / ``decode(payload) -> payload`` (optional) give the wire form: top-k
  sends indices and values, quantize one byte per value. Codecs compose in chain order: a later codec encodes
  the float arrays an earlier one produced (topk,quantize sends int32 indices and 8-bit values).

Options are each transform's frozen dataclass fields: ``--clip.norm 5`` is ``Clip(norm=5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map, tree_sq_norm, tree_zeros_like
from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.pipeline.bitpack import pack_bits, unpack_bits
from fedloom.pipeline.context import TransformContext
from fedloom.pipeline.wire import Payload
from fedloom.registry import Registry

TRANSFORMS: Registry[type] = Registry("transform")

#: The validated order of a chain (issue 20): bound every contribution, then compress, then add noise; secure
#: summation comes last, on the server (an aggregator). A transform declares its ``stage``; "any" fits anywhere.
STAGES = ("clip", "compress", "noise")


def check_order(before: list["UploadTransform"], transform: "UploadTransform") -> None:
    """ConfigError when ``transform`` would run after a transform of a later stage (noise before clipping: the
    noise would no longer be scaled to a bound the upload respects; compression after noise: the noise would be
    compressed away)."""
    if transform.stage not in STAGES:
        return
    rank = STAGES.index(transform.stage)
    for earlier in before:
        if earlier.stage in STAGES and STAGES.index(earlier.stage) > rank:
            raise ConfigError(f"transform '{_name(transform)}' ({transform.stage}) cannot follow "
                              f"'{_name(earlier)}' ({earlier.stage}): the order is clip → compress → noise "
                              f"(→ secure sum on the server)")


def _name(transform: "UploadTransform") -> str:
    return getattr(type(transform), "registry_name", type(transform).__name__.lower())


@dataclass(frozen=True)
class UploadTransform:
    """Base class: identity, stateless, no codec."""

    #: True when ``apply`` keeps per-client state between rounds.
    stateful: ClassVar[bool] = False
    #: True when the transform has a wire codec (encode/decode).
    has_codec: ClassVar[bool] = False
    #: Its place in the order clip → compress → noise (``STAGES``), checked by ``check_chain``; "any": anywhere.
    stage: ClassVar[str] = "any"
    #: True when every client must count once on the server (client-level DP: the sum's sensitivity is the
    #: clipping bound only if every weight is 1); the pipeline then hands the server weight 1 for every upload.
    uniform_weights: ClassVar[bool] = False
    #: True when ``apply`` means the same on the float arrays of an algorithm's compact upload (FedKSeed's
    #: scalars) as on a dense one, so that the upload stays compact (``UploadPipeline.on_compact``); False: the
    #: transform is refused before training on such an algorithm unless a codec comes first.
    acts_on_compact: ClassVar[bool] = False

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def check_chain(self, before: list["UploadTransform"]) -> None:
        """Raise ConfigError if this transform cannot follow ``before`` (e.g. noise without clipping)."""
        check_order(before, self)

    def bind(self, cfg: Any, num_clients: int) -> "UploadTransform":
        """This transform for a run of ``num_clients`` clients (``cfg``: the RunConfig): DP sizes its noise to
        the cohort and calibrates it to a target ε here, before training. Default: itself."""
        return self

    def server_stage(self, aggregator: Optional[Any], algorithm: Any) -> Optional[Any]:
        """The aggregator the server uses when this transform is in the chain (default: ``aggregator`` as is;
        None is the plain mean). Client-level DP wraps it to add the central noise to the sum."""
        return aggregator

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        return upload, state

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        return payload

    def decode(self, payload: Payload) -> Payload:
        return payload


@TRANSFORMS.register("clip")
@dataclass(frozen=True)
class Clip(UploadTransform):
    """L2 clipping of the whole upload: u ← u · min(1, norm / ‖u‖₂) (Abadi et al. 2016; McMahan et al., DP-FedAvg,
    ICLR 2018), so every client's contribution is bounded by ``norm``."""

    norm: float = hp(1.0, gt=0, help="the L2 bound of every upload")
    stage: ClassVar[str] = "clip"
    acts_on_compact: ClassVar[bool] = True  # bounds what is sent (DPZero clips the scalar ĝ)

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        norm = float(torch.sqrt(tree_sq_norm(upload)))
        if norm <= self.norm:
            return upload, state
        factor = self.norm / norm
        return tree_map(lambda u: u * factor, upload), state


@TRANSFORMS.register("gaussian")
@dataclass(frozen=True)
class Gaussian(UploadTransform):
    """Gaussian noise of standard deviation ``multiplier · clip.norm`` on every coordinate (the Gaussian mechanism
    on a clipped update; local noise here — the privacy issue adds server-side noise and the accountant)."""

    multiplier: float = hp(1.0, ge=0, help="noise standard deviation, in units of clip.norm")
    stage: ClassVar[str] = "noise"
    acts_on_compact: ClassVar[bool] = True  # the Gaussian mechanism on what is sent

    def check_chain(self, before: list[UploadTransform]) -> None:
        super().check_chain(before)
        if not any(isinstance(t, Clip) for t in before):
            raise ConfigError("transform 'gaussian' needs 'clip' before it (noise is scaled to the clipping "
                              "norm): use --transform clip,gaussian")

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        std = self.multiplier * tctx.clip_norm
        gen = tctx.generator("gaussian")
        return tree_map(lambda u: u + std * torch.randn(u.shape, generator=gen, dtype=u.dtype).to(u.device),
                        upload), state


@TRANSFORMS.register("topk")
@dataclass(frozen=True)
class TopK(UploadTransform):
    """Top-k sparsification per tensor with error feedback (Stich, Cordonnier, Jaggi, "Sparsified SGD with
    Memory", NeurIPS 2018): the client sends the k = ceil(ratio·size) largest-magnitude coordinates of
    (update + residual) and keeps the rest as its residual for the next round. Wire: int32 indices + values."""

    ratio: float = hp(0.1, gt=0, le=1, help="share of each tensor's coordinates sent")
    error_feedback: bool = True
    stateful: ClassVar[bool] = True
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        residual = state if (state is not None and self.error_feedback) else tree_zeros_like(upload)
        corrected = tree_map(torch.add, upload, residual)
        sent = tree_map(self._keep_top, corrected)
        new_residual = tree_map(torch.sub, corrected, sent) if self.error_feedback else None
        return sent, new_residual

    def _keep_top(self, t: torch.Tensor) -> torch.Tensor:
        k = self.k_of(t.numel())
        flat = t.reshape(-1)
        kept = torch.zeros_like(flat)
        index = torch.topk(flat.abs(), k, sorted=False).indices
        kept[index] = flat[index]
        return kept.reshape(t.shape)

    def k_of(self, size: int) -> int:
        return max(1, min(size, math.ceil(self.ratio * size)))

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point():
                out[name] = array
                continue
            flat = array.reshape(-1)
            index = torch.topk(flat.abs(), self.k_of(flat.numel()), sorted=True).indices.sort().values
            out[f"{name}#idx"] = index.to(torch.int32)
            out[f"{name}#val"] = flat[index]
            out[f"{name}#shape"] = torch.tensor(array.shape, dtype=torch.int32)
        return out

    def decode(self, payload: Payload) -> Payload:
        out: Payload = {}
        for name in [n[:-4] for n in payload if n.endswith("#idx")]:
            shape = tuple(int(s) for s in payload[f"{name}#shape"])
            dense = torch.zeros(math.prod(shape), dtype=payload[f"{name}#val"].dtype,
                                device=payload[f"{name}#val"].device)
            dense[payload[f"{name}#idx"].long()] = payload[f"{name}#val"]
            out[name] = dense.reshape(shape)
        out.update({n: a for n, a in payload.items() if "#" not in n})
        return out


@TRANSFORMS.register("quantize")
@dataclass(frozen=True)
class Quantize(UploadTransform):
    """Unbiased stochastic quantization to ``bits`` per value (QSGD-style, Alistarh et al., NeurIPS 2017, with a
    per-tensor min/scale grid): q = floor((x − lo)/s + u), u ~ U[0, 1), so E[lo + q·s] = x. Wire: one uint8 per
    value (``bits`` < 8: the codes packed, ``bits`` bits each, plus the int32 shape) and lo, s (float32) per
    tensor."""

    bits: int = hp(8, ge=1, le=8, help="bits per value")
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        gen = tctx.generator("quantize")
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point() or array.numel() == 0:
                out[name] = array
                continue
            out.update(self._quantize(name, array, gen))
        return out

    def _quantize(self, name: str, array: torch.Tensor, gen: torch.Generator) -> Payload:
        levels = 2 ** self.bits - 1
        lo, hi = array.min(), array.max()
        scale = (hi - lo) / levels if hi > lo else torch.ones((), dtype=array.dtype, device=array.device)
        noise = torch.rand(array.shape, generator=gen, dtype=torch.float32).to(array.device)
        codes = torch.floor((array - lo) / scale + noise).clamp(0, levels).to(torch.uint8)
        out = {f"{name}#q": codes, f"{name}#lo": lo.reshape(1).float(), f"{name}#scale": scale.reshape(1).float()}
        if self.bits < 8:  # b bits per value on the wire: codes packed, the shape to unpack them
            out.update({f"{name}#q": pack_bits(codes, self.bits),
                        f"{name}#shape": torch.tensor(array.shape, dtype=torch.int32)})
        return out

    def decode(self, payload: Payload) -> Payload:
        out: Payload = {}
        names = [n[:-2] for n in payload if n.endswith("#q")]
        for name in names:
            codes = payload[f"{name}#q"]
            if self.bits < 8:
                shape = tuple(int(s) for s in payload[f"{name}#shape"])
                codes = unpack_bits(codes, self.bits, math.prod(shape)).reshape(shape)
            out[name] = payload[f"{name}#lo"] + codes.to(torch.float32) * payload[f"{name}#scale"]
        own = {f"{name}#shape" for name in names} if self.bits < 8 else set()
        out.update({n: a for n, a in payload.items()
                    if _codec_suffix(n) not in ("q", "lo", "scale") and n not in own})
        return out


def _codec_suffix(name: str) -> str:
    """``"w#q"`` → ``"q"``; names without a codec suffix → ``""``."""
    return name.rsplit("#", 1)[1] if "#" in name else ""
