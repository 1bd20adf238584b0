"""Cost of one zeroth-order (FedKSeed / MeZO) step on this machine, for GPT-2 shapes from ~0.1 M to 124 M
parameters: seconds per step and peak resident memory, against one first-order (backprop + SGD) step.

    OMP_NUM_THREADS=1 python benchmarks/zo_step.py --threads 1 --steps 3 --json zo_step.json

Each (model, mode) runs in its own process so that the peak memory (ru_maxrss) is its own; the baseline is a
process that only builds the model. One step = the step of fedloom.algorithms._zo (two forward passes on a
probe copy, z regenerated three times from the seed) on a batch of one sequence of ``--seq`` tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

#: (registered model, vocabulary): gpt2-small keeps GPT-2's own 50,257 tokens
MODELS = [("gpt2-nano", 2048), ("gpt2-tiny", 2048), ("gpt2-mini", 2048), ("gpt2-small", 50257)]


def measure(model_name: str, vocab: int, mode: str, steps: int, seq: int, threads: int) -> dict:
    from fedloom.algorithms._zo import ZOSettings, zo_steps
    from fedloom.config import make_component
    from fedloom.models import MODELS as REGISTRY
    from fedloom.tasks.instruction import Instruction
    from torch.func import functional_call

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_component(REGISTRY, model_name, {"vocab_size": vocab}).build((2, seq), 1)
    model.requires_grad_(False)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.stack([torch.randint(1, vocab, (1, seq)), torch.ones(1, seq, dtype=torch.long)], dim=1)
    task = Instruction()

    def loss(p: dict) -> torch.Tensor:
        return task.mean_loss(functional_call(model, p, (x,)), None)

    times = []
    for step in range(steps + (mode != "build")):
        start = time.perf_counter()
        if mode == "zo":
            with torch.no_grad():
                zo_steps(params, [step + 1], [0], [loss], ZOSettings(lr=1e-6, eps=1e-3))
        elif mode == "fo":
            work = {n: t.requires_grad_(True) for n, t in params.items()}
            grads = torch.autograd.grad(loss(work), list(work.values()))
            with torch.no_grad():
                for t, g in zip(work.values(), grads):
                    t.sub_(g, alpha=1e-3)
            params = {n: t.detach() for n, t in work.items()}
        times.append(time.perf_counter() - start)
    return {"model": model_name, "parameters": sum(t.numel() for t in params.values()), "mode": mode,
            "seconds_per_step": statistics.median(times[1:]) if mode != "build" else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": threads, "seq": seq}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS))
    parser.add_argument("--modes", default="build,zo,fo")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    vocab = dict(MODELS)
    if args.one:
        print(json.dumps(measure(args.one[0], vocab[args.one[0]], args.one[1], args.steps, args.seq, args.threads)))
        return 0
    rows = []
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", name, mode, "--steps", str(args.steps),
                                  "--seq", str(args.seq), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
