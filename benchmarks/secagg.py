"""Secure aggregation overhead against plain aggregation, by cohort size and dropout rate (issue 20, result c).

For each (n clients, dropout rate) one round of ``--aggregator secagg`` (X25519 key agreement, AES-CTR masks,
Shamir t-of-n with t = a majority) sums n random updates of ``--dim`` float32 values, and prints: bytes one client
sends (public keys, encrypted shares, masked vector, unmasking shares) against the plain 4·d, the expansion
ratio, client seconds (the simulation's client-side work divided by n: key generation, sharing, n − 1 key
agreements and PRG expansions), server seconds (unmasking), the plain sum's seconds, and the largest error
against the plain sum of the survivors (fixed-point quantization only).

    OMP_NUM_THREADS=1 python benchmarks/secagg.py --clients 10 30 100 300 --dropout 0 0.1 0.3 --dim 7850
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.secagg.aggregator import SecureAggregation
from fedloom.seeding import numpy_generator


def one(n: int, dropout: float, dim: int, bits: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    items = [(c, {"w": (torch.rand(dim, generator=gen) - 0.5) * 0.2}, 1.0) for c in range(n)]
    ctx = AggregationContext(seed=seed, round=1, global_params={})
    started = time.perf_counter()
    total, survivors, _ = SecureAggregation(bits=bits, clip_range=0.1, dropout=dropout).secure_sum(items, ctx)
    wall = time.perf_counter() - started
    dropped = numpy_generator(seed, 1, -1, "secagg-dropout").random(n) < dropout
    t0 = time.perf_counter()
    plain = torch.stack([u["w"].double() for (_, u, _), d in zip(items, dropped) if not d]).sum(0)
    plain_seconds = time.perf_counter() - t0
    m = ctx.metrics
    return {"clients": n, "dropout": dropout, "survivors": int(survivors), "threshold": int(m["secagg_threshold"]),
            "dim": dim, "bits": bits, "client_bytes": int(m["secagg_client_bytes"]),
            "plain_bytes": int(m["secagg_plain_bytes"]),
            "expansion": m["secagg_client_bytes"] / m["secagg_plain_bytes"],
            "client_seconds": m["secagg_client_seconds"], "server_seconds": m["secagg_server_seconds"],
            "plain_sum_seconds": plain_seconds, "round_wall_seconds": wall,
            "max_abs_error": float((total["w"] - plain).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--dim", type=int, default=7850, help="values per update (7850: logreg on 28x28, 10 classes)")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--json", help="also write the rows to this file (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| clients | dropout | survivors | t | client bytes | plain bytes | expansion | client s | server s "
          "| plain sum s | max error |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.clients:
        for dropout in args.dropout:
            row = one(n, dropout, args.dim, args.bits)
            print(f"| {n} | {dropout} | {row['survivors']} | {row['threshold']} | {row['client_bytes']:,} | "
                  f"{row['plain_bytes']:,} | {row['expansion']:.2f} | {row['client_seconds']:.4f} | "
                  f"{row['server_seconds']:.3f} | {row['plain_sum_seconds']:.5f} | {row['max_abs_error']:.2e} |",
                  flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
