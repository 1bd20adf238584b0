"""Upload compressors beyond top-k and quantize (transforms.py): random-k, QSGD, signSGD with majority vote,
EF-signSGD and PowerSGD. Each is an upload transform of the "compress" stage whose wire codec emits exactly what
would be sent (values, packed bits, scales, seeds, shapes), so bytes are counted from the encoded payload.

Compressors that keep error feedback store the residual (and PowerSGD its warm-start factor) as the transform's
per-client state, beside the algorithm's, through the pipeline (``stateful = True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import hp
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator, Items, _stack
from fedloom.pipeline.bitpack import pack_bits, unpack_bits
from fedloom.pipeline.context import AggregationContext, TransformContext
from fedloom.pipeline.transforms import TRANSFORMS, UploadTransform
from fedloom.pipeline.wire import Payload, flatten, unflatten
from fedloom.seeding import derive_seed


def _shape(array: torch.Tensor) -> torch.Tensor:
    return torch.tensor(array.shape, dtype=torch.int32)


def _shape_of(payload: Payload, name: str) -> tuple[int, ...]:
    return tuple(int(s) for s in payload[f"{name}#shape"])


def _encoded_names(payload: Payload, suffix: str) -> list[str]:
    return [n[:-len(suffix)] for n in payload if n.endswith(suffix)]


def _rest(payload: Payload, key: str, suffixes: tuple[str, ...]) -> Payload:
    """Arrays this codec did not write (integer arrays it left alone, those of earlier codecs in the chain): every
    array but ``<name>#<suffix>`` for the names it encoded (found by their ``key`` suffix)."""
    owned = {f"{name}#{suffix}" for name in _encoded_names(payload, f"#{key}") for suffix in suffixes}
    return {n: a for n, a in payload.items() if n not in owned}


def _sign_bits(array: torch.Tensor) -> torch.Tensor:
    return pack_bits((array.reshape(-1) >= 0).to(torch.uint8), 1)


def _signs(packed: torch.Tensor, count: int) -> torch.Tensor:
    return unpack_bits(packed, 1, count).to(torch.float32) * 2 - 1


def _with_feedback(upload: Tree, state: Optional[Tree], on: bool) -> Tree:
    return tree_map(torch.add, upload, state) if (on and state is not None) else upload


# ---------------------------------------------------------------------------------------------- random-k
@TRANSFORMS.register("randk")
@dataclass(frozen=True)
class RandK(UploadTransform):
    """Random-k sparsification (Stich, Cordonnier, Jaggi, NeurIPS 2018): k = ceil(ratio·size) coordinates of each
    tensor chosen by a seed, so the wire carries the k values and one 8-byte seed instead of indices. With error
    feedback the unsent rest is carried to the next round; without it the kept values are scaled by d/k
    (unbiased)."""

    ratio: float = hp(0.1, gt=0, le=1, help="share of each tensor's coordinates sent")
    error_feedback: bool = True
    stateful: ClassVar[bool] = True
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def k_of(self, size: int) -> int:
        return max(1, min(size, math.ceil(self.ratio * size)))

    @staticmethod
    def seed_of(tctx: TransformContext, name: str) -> int:
        return derive_seed(tctx.seed, tctx.round, tctx.client_id, f"randk:{name}")

    def indices(self, seed: int, size: int) -> torch.Tensor:
        return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:self.k_of(size)].sort().values

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        corrected = flatten(_with_feedback(upload, state, self.error_feedback))
        sent = {}
        for name, array in corrected.items():
            flat, kept = array.reshape(-1), torch.zeros_like(array.reshape(-1))
            index = self.indices(self.seed_of(tctx, name), flat.numel()).to(flat.device)
            scale = 1.0 if self.error_feedback else flat.numel() / index.numel()
            kept[index] = flat[index] * scale
            sent[name] = kept.reshape(array.shape)
        residual = {n: corrected[n] - sent[n] for n in sent} if self.error_feedback else None
        return unflatten(sent, upload), (unflatten(residual, upload) if residual is not None else None)

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point():
                out[name] = array
                continue
            seed = self.seed_of(tctx, name)
            out[f"{name}#seed"] = torch.tensor([seed], dtype=torch.int64)
            out[f"{name}#val"] = array.reshape(-1)[self.indices(seed, array.numel()).to(array.device)]
            out[f"{name}#shape"] = _shape(array)
        return out

    def decode(self, payload: Payload) -> Payload:
        out = _rest(payload, "seed", ("seed", "val", "shape"))
        for name in _encoded_names(payload, "#seed"):
            shape, values = _shape_of(payload, name), payload[f"{name}#val"]
            dense = torch.zeros(math.prod(shape), dtype=values.dtype, device=values.device)
            dense[self.indices(int(payload[f"{name}#seed"][0]), dense.numel()).to(values.device)] = values
            out[name] = dense.reshape(shape)
        return out


# ---------------------------------------------------------------------------------------------- QSGD
@TRANSFORMS.register("qsgd")
@dataclass(frozen=True)
class QSGD(UploadTransform):
    """QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic, NeurIPS 2017): per bucket of ``bucket`` values, the L2 norm
    (float32), one sign bit per value and a level l ∈ {0..s} per value in ceil(log2(s+1)) bits, with
    l = floor(s·|v|/‖v‖ + u), u ~ U[0, 1), so that E[‖v‖·sign·l/s] = v (unbiased)."""

    levels: int = hp(15, ge=1, le=255, help="s: quantization levels per sign")
    bucket: int = hp(512, ge=1, help="values sharing one norm")
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    @property
    def level_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.levels + 1)))

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        gen = tctx.generator("qsgd")
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point() or array.numel() == 0:
                out[name] = array
                continue
            flat = array.reshape(-1).float()
            buckets = torch.nn.functional.pad(flat, (0, -flat.numel() % self.bucket)).reshape(-1, self.bucket)
            norms = torch.linalg.vector_norm(buckets, dim=1)
            ratio = buckets.abs() / norms.clamp_min(1e-30)[:, None] * self.levels
            noise = torch.rand(ratio.shape, generator=gen).to(ratio.device)
            level = torch.floor(ratio + noise).clamp(0, self.levels).reshape(-1)[:flat.numel()]
            out[f"{name}#norm"] = norms
            out[f"{name}#sign"] = _sign_bits(flat)
            out[f"{name}#lvl"] = pack_bits(level.to(torch.uint8), self.level_bits)
            out[f"{name}#shape"] = _shape(array)
        return out

    def decode(self, payload: Payload) -> Payload:
        out = _rest(payload, "norm", ("norm", "sign", "lvl", "shape"))
        for name in _encoded_names(payload, "#norm"):
            shape = _shape_of(payload, name)
            count = math.prod(shape)
            level = unpack_bits(payload[f"{name}#lvl"], self.level_bits, count).float()
            norms = payload[f"{name}#norm"].repeat_interleave(self.bucket)[:count]
            out[name] = (norms * _signs(payload[f"{name}#sign"], count) * level / self.levels).reshape(shape)
        return out


# ---------------------------------------------------------------------------------------------- signSGD
@TRANSFORMS.register("signsgd")
@dataclass(frozen=True)
class SignSGD(UploadTransform):
    """signSGD (Bernstein, Wang, Azizzadenesheli, Anandkumar, ICML 2018): one bit per coordinate, sign(v) (0 counts
    as +). The server decodes ±``scale``; pair it with ``--aggregator majority-vote`` (Bernstein et al., ICLR
    2019), which steps by the sign of the vote."""

    scale: float = hp(1.0, gt=0, help="magnitude the server gives each decoded sign (a constant, not sent)")
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        return tree_map(lambda u: torch.where(u >= 0, self.scale, -self.scale).to(u.dtype), upload), state

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point():
                out[name] = array
                continue
            out[f"{name}#sign"] = _sign_bits(array)
            out[f"{name}#shape"] = _shape(array)
        return out

    def decode(self, payload: Payload) -> Payload:
        out = _rest(payload, "sign", ("sign", "shape"))
        for name in _encoded_names(payload, "#sign"):
            shape = _shape_of(payload, name)
            out[name] = (_signs(payload[f"{name}#sign"], math.prod(shape)) * self.scale).reshape(shape)
        return out


@AGGREGATORS.register("majority-vote")
@dataclass(frozen=True)
class MajorityVote(Aggregator):
    """signSGD with majority vote (Bernstein, Zhao, Azizzadenesheli, Anandkumar, ICLR 2019): the server steps by
    ``step``·sign(Σᵢ sign(uᵢ)), unweighted (ties give 0)."""

    step: float = hp(0.01, gt=0, help="the server's step per coordinate (η)")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        return tree_map(lambda s: self.step * torch.sign(torch.sign(s).sum(dim=0)), _stack(items))


# ---------------------------------------------------------------------------------------------- EF-signSGD
@TRANSFORMS.register("ef-signsgd")
@dataclass(frozen=True)
class EFSignSGD(UploadTransform):
    """EF-signSGD (Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes SignSGD", ICML 2019): p = v + e, send
    (‖p‖₁/d)·sign(p) per tensor (one float32 scale and one bit per coordinate), keep e ← p − sent."""

    stateful: ClassVar[bool] = True
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        corrected = _with_feedback(upload, state, True)
        sent = tree_map(lambda p: p.abs().mean() * torch.where(p >= 0, 1.0, -1.0).to(p.dtype), corrected)
        return sent, tree_map(torch.sub, corrected, sent)

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point():
                out[name] = array
                continue
            out[f"{name}#scale"] = array.abs().max().reshape(1).float()  # every |value| is the scale
            out[f"{name}#sign"] = _sign_bits(array)
            out[f"{name}#shape"] = _shape(array)
        return out

    def decode(self, payload: Payload) -> Payload:
        out = _rest(payload, "scale", ("scale", "sign", "shape"))
        for name in _encoded_names(payload, "#scale"):
            shape = _shape_of(payload, name)
            signs = _signs(payload[f"{name}#sign"], math.prod(shape))
            out[name] = (signs * payload[f"{name}#scale"]).reshape(shape)
        return out


# ---------------------------------------------------------------------------------------------- PowerSGD
@TRANSFORMS.register("powersgd")
@dataclass(frozen=True)
class PowerSGD(UploadTransform):
    """PowerSGD (Vogels, Karimireddy, Jaggi, NeurIPS 2019): every matrix-shaped tensor M (+ error feedback) is sent
    as rank-r factors from one power iteration warm-started at last round's Q: P = orth(M·Q), Q = Mᵀ·P, send P and
    Q (float32), keep e ← M − P·Qᵀ. Tensors too small to gain (vectors, rank ≥ a side) go dense."""

    rank: int = hp(2, ge=1, help="r: rank of the factors")
    error_feedback: bool = True
    stateful: ClassVar[bool] = True
    has_codec: ClassVar[bool] = True
    stage: ClassVar[str] = "compress"

    def compresses(self, array: torch.Tensor) -> bool:
        if array.dim() < 2:
            return False
        rows, cols = array.shape[0], array.numel() // array.shape[0]
        return self.rank * (rows + cols) < rows * cols

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        state = state or {}
        residual = state.get("e") if self.error_feedback else None
        corrected = flatten(_with_feedback(upload, residual and unflatten(residual, upload), True))
        warm, sent, new_q = state.get("q", {}), {}, {}
        gen = tctx.generator("powersgd")
        for name, array in corrected.items():
            if not self.compresses(array):
                sent[name] = array
                continue
            matrix = array.reshape(array.shape[0], -1)
            q = warm.get(name)
            if q is None:
                q = torch.randn(matrix.shape[1], self.rank, generator=gen).to(matrix.device, matrix.dtype)
            p, _ = torch.linalg.qr(matrix @ q)
            new_q[name] = matrix.T @ p
            sent[name] = (p @ new_q[name].T).reshape(array.shape)
        new_state: dict = {"q": new_q}
        if self.error_feedback:
            new_state["e"] = {n: corrected[n] - sent[n] for n in corrected}
        return unflatten(sent, upload), new_state

    def encode(self, payload: Payload, tctx: TransformContext) -> Payload:
        out: Payload = {}
        for name, array in payload.items():
            if not array.is_floating_point() or not self.compresses(array):
                out[name] = array
                continue
            # the array is P·Qᵀ of rank ≤ r: an orthonormal basis of its columns gives the factors back exactly
            matrix = array.reshape(array.shape[0], -1).double()  # float64: the factors match to float32 rounding
            probe = torch.randn(matrix.shape[1], self.rank, generator=torch.Generator().manual_seed(0))
            p, _ = torch.linalg.qr(matrix @ probe.to(matrix.device, matrix.dtype))
            out[f"{name}#p"], out[f"{name}#q"] = p.float(), (matrix.T @ p).float()
            out[f"{name}#shape"] = _shape(array)
        return out

    def decode(self, payload: Payload) -> Payload:
        out = _rest(payload, "p", ("p", "q", "shape"))
        for name in _encoded_names(payload, "#p"):
            out[name] = (payload[f"{name}#p"] @ payload[f"{name}#q"].T).reshape(_shape_of(payload, name))
        return out
