"""``--aggregator secagg``: the server sums the cohort's uploads through the secure aggregation protocol
(``protocol.py``) and averages the survivors, each counted once (the server cannot see per-client weights in a
masked sum). Uploads are clipped to [−c, c] per coordinate and encoded in fixed point in Z_{2^k}, with enough
head room that the sum of n clients never wraps. Combined with ``--transform dp --dp.mode distributed`` it is
the distributed-DP setting of the reference (§7.4 e): the server only ever holds masked vectors and the sum."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import hp
from fedloom.errors import ConfigError, TrainingError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator, Items
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.secagg.protocol import Client, Server, client_upload_bytes
from fedloom.pipeline.wire import flatten, unflatten
from fedloom.seeding import numpy_generator


@dataclass(frozen=True)
class FixedPoint:
    """x ↦ round(clip(x, −c, c)·2^f) mod 2^k, with f the largest power of two for which n clients' sum stays in
    (−2^(k−1), 2^(k−1)): no wrap-around, error at most 2^−(f+1) per coordinate and client."""

    bits: int
    clip_range: float
    clients: int

    @property
    def scale(self) -> float:
        return 2.0 ** math.floor(math.log2((2 ** (self.bits - 1) - 1) / (self.clients * self.clip_range)))

    def encode(self, x: np.ndarray) -> np.ndarray:
        q = np.round(np.clip(x, -self.clip_range, self.clip_range) * self.scale).astype(np.int64)
        return q.astype(np.uint64) & np.uint64(2 ** self.bits - 1)

    def decode(self, total: np.ndarray) -> np.ndarray:
        signed = total.astype(np.int64)
        signed = np.where(signed >= 2 ** (self.bits - 1), signed - 2 ** self.bits, signed)
        return signed.astype(np.float64) / self.scale


@AGGREGATORS.register("secagg")
@dataclass(frozen=True)
class SecureAggregation(Aggregator):
    """Secure aggregation (Bonawitz et al., CCS 2017), simulated with X25519, AES-CTR and Shamir shares."""

    bits: int = hp(32, ge=8, le=62, help="k: values live in Z_{2^k} (bits per coordinate on the wire)")
    clip_range: float = hp(1.0, gt=0, help="c: every coordinate is clipped to [-c, c] before encoding")
    threshold: Optional[int] = hp(None, ge=1, help="t: shares needed to unmask (default: a majority of the cohort)")
    dropout: float = hp(0.0, ge=0, lt=1, help="chance that a client drops out after sharing its keys")

    def check_cohort(self, size: int) -> None:
        if self.threshold is not None and self.threshold > size:
            raise ConfigError(f"secagg.threshold {self.threshold} is larger than the cohort ({size} clients per "
                              f"round): no round could ever be unmasked; lower it or sample more clients")

    def threshold_of(self, n: int) -> int:
        return self.threshold if self.threshold is not None else n // 2 + 1

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        total, survivors, _ = self.secure_sum(items, ctx)
        return tree_map(lambda s: (s / survivors).to(torch.float32), total)

    def secure_sum(self, items: Items, ctx: Optional[AggregationContext] = None) -> tuple[Tree, float, int]:
        """(Σ of the survivors' uploads, survivors, cohort size): one full protocol run."""
        seed, round_ = (ctx.seed, ctx.round) if ctx is not None else (0, 0)
        ids = [cid for cid, _, _ in items]
        n, t = len(ids), self.threshold_of(len(ids))
        if t > n:
            raise TrainingError(f"secure aggregation in round {round_}: threshold {t} > {n} sampled clients")
        like = items[0][1]
        vectors = {cid: _flat(upload) for cid, upload, _ in items}
        code = FixedPoint(self.bits, self.clip_range, n)
        dropped = numpy_generator(seed, round_, -1, "secagg-dropout").random(n) < self.dropout
        survivors = {cid for cid, gone in zip(ids, dropped) if not gone}
        if len(survivors) < t:
            raise TrainingError(f"secure aggregation in round {round_}: {len(survivors)} of {n} clients survived, "
                                f"fewer than the threshold t = {t}; lower secagg.dropout or secagg.threshold")
        started = time.perf_counter()
        clients = {cid: Client.create(cid, numpy_generator(seed, round_, cid, "secagg-keys")) for cid in ids}
        server = Server(self.bits, t, {cid: c.public_key() for cid, c in clients.items()})
        for cid, client in clients.items():  # ShareKeys: every client's shares reach every peer
            for peer, share in client.share_keys(ids, t, numpy_generator(seed, round_, cid, "secagg-shares")).items():
                clients[peer].received[cid] = share
        masked = {cid: clients[cid].masked_input(code.encode(vectors[cid]), server.public_keys, self.bits)
                  for cid in sorted(survivors)}
        client_seconds = (time.perf_counter() - started) / n
        started = time.perf_counter()
        shares = {cid: clients[cid].unmasking_shares(survivors, ids) for cid in sorted(survivors)}
        total = code.decode(server.unmask(masked, shares, ids))
        if ctx is not None:
            size = next(iter(vectors.values())).size
            ctx.metrics.update({
                "secagg_survivors": float(len(survivors)), "secagg_threshold": float(t),
                "secagg_client_bytes": float(client_upload_bytes(n, size, self.bits)),
                "secagg_plain_bytes": float(4 * size), "secagg_client_seconds": client_seconds,
                "secagg_server_seconds": time.perf_counter() - started,
                "secagg_clipped": float(np.mean([np.mean(np.abs(v) > self.clip_range) for v in vectors.values()]))})
        return _unflat(total, like), float(len(survivors)), n


def _flat(tree: Tree) -> np.ndarray:
    return np.concatenate([a.detach().double().reshape(-1).cpu().numpy() for _, a in sorted(flatten(tree).items())])


def _unflat(vector: np.ndarray, like: Tree) -> Tree:
    out, at = {}, 0
    for name, array in sorted(flatten(like).items()):
        out[name] = torch.from_numpy(vector[at:at + array.numel()].copy()).reshape(array.shape).to(array.device)
        at += array.numel()
    return unflatten(out, like)
