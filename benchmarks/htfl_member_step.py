"""Cost of one local SGD step (batch 10, cross-entropy, forward + backward + update through functional_call, as
the engines run it) for every member of an HtFLlib model family (Zhang et al., "HtFLlib", KDD 2025), as a ratio
to the family's 4-layer CNN measured in the same run. It says why the full-size families are for a GPU.

    OMP_NUM_THREADS=1 python benchmarks/htfl_member_step.py --family HtM-img-10 --steps 3 --json out.json

The median of ``--steps`` timed steps after one warm-up step; ``--shape`` is one sample's (default 3x32x32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.func import functional_call


def step_seconds(model: torch.nn.Module, shape: tuple[int, ...], steps: int, batch: int) -> float:
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            params = {n: (p - 0.01 * g).requires_grad_(True) for (n, p), g in zip(params.items(), grads)}
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from fedloom.models.families import build_family

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="HtM-img-10")
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    family = build_family(args.family, {})
    rows = []
    for label in dict.fromkeys(family.labels()):
        model = family.build_member(label, shape, 10, seed=1)
        seconds = step_seconds(model, shape, args.steps, args.batch)
        rows.append({"member": label, "params": sum(p.numel() for p in model.parameters()), "seconds": seconds})
        print(f"{label:24s} {rows[-1]['params']:>12,d} params  {seconds * 1000:9.1f} ms/step", flush=True)
    base = next((r["seconds"] for r in rows if r["member"] == "cnn"), rows[0]["seconds"])
    for row in rows:
        row["ratio_to_cnn"] = row["seconds"] / base
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"family": args.family, "shape": shape, "batch": args.batch, "threads": args.threads,
                       "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
