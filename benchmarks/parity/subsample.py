"""A per-client random subsample of a fedloom partition file (same clients, same label skew, fewer samples).

    python benchmarks/parity/subsample.py DIR/clients.npz --fraction 0.1 --seed 0 --out SUB/clients.npz

Used when the CPU budget cannot afford the full partition: every client keeps ceil(f·n) of its train and of its
test indices (at least ``--min-train`` / ``--min-test``, or all it has), drawn without replacement from a
generator seeded by (seed, client, split). The manifest is kept, with ``subsample`` recorded and the
partition hash recomputed, so ``fedloom run --partition-file`` and the PFLlib export accept it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from fedloom.data.cache import content_hash


def subsample(indices: np.ndarray, offsets: np.ndarray, fraction: float, minimum: int, seed: int,
              split: int) -> list[np.ndarray]:
    parts = []
    for c in range(len(offsets) - 1):
        own = indices[offsets[c]:offsets[c + 1]]
        keep = min(len(own), max(minimum, math.ceil(fraction * len(own))))
        rng = np.random.default_rng([seed, c, split])
        parts.append(np.sort(rng.choice(own, size=keep, replace=False)))
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("partition", type=Path)
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-train", type=int, default=20, help="two batches of 10 (PFLlib drops a partial batch)")
    p.add_argument("--min-test", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if not 0 < a.fraction <= 1:
        p.error("--fraction must be in (0, 1]")
    src = np.load(a.partition)
    manifest = json.loads(src["manifest"].item())
    train = subsample(src["train_indices"], src["train_offsets"], a.fraction, a.min_train, a.seed, 0)
    test = subsample(src["test_indices"], src["test_offsets"], a.fraction, a.min_test, a.seed, 1)
    manifest["subsample"] = {"of": manifest["partition_hash"], "fraction": a.fraction, "seed": a.seed,
                             "min_train": a.min_train, "min_test": a.min_test}
    manifest["partition_hash"] = content_hash(train, test)
    flat = {name: (np.concatenate(parts), np.cumsum([0] + [len(q) for q in parts]))
            for name, parts in (("train", train), ("test", test))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, manifest=np.array(json.dumps(manifest)),
             train_indices=flat["train"][0].astype(np.int64), train_offsets=flat["train"][1].astype(np.int64),
             test_indices=flat["test"][0].astype(np.int64), test_offsets=flat["test"][1].astype(np.int64))
    print(f"wrote {a.out}: {sum(map(len, train))} train, {sum(map(len, test))} test samples, "
          f"hash {manifest['partition_hash'][:12]}")


if __name__ == "__main__":
    main()
