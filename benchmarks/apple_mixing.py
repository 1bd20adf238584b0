"""APPLE's per-batch cost: the personalized model Σ_j p_j c_j and its gradients, two ways.

    python benchmarks/apple_mixing.py --clients 20 --repeats 20

"explicit stack" rebuilds the N×|M| stack of cores with the client's live core in its row under autograd
every batch (the formulation the method's equations suggest, fedloom's before this benchmark); "constant
others" is what fedloom.algorithms.apple does: the other clients' cores are a constant stack for the whole
round and the live core enters the mix separately, so no N×|M| tensor is built or differentiated per batch.
Both give the same loss and gradients (tests/algorithms/test_server_memory.py). Baseline in the same run: a
plain training step on the core alone. FedAvgCNN on 1×28×28 inputs, batch 10, one torch thread.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedloom.algorithms.apple import with_own_core, without_own_core
from fedloom.models import build_model

OWN = 3  # which row of the stack is "this client"


def timed(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model("cnn", {}, (1, 28, 28), 10, seed=0)
    core = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    cores = {k: torch.stack([v.detach() + 0.01 * torch.randn(v.shape, generator=generator)
                             for _ in range(args.clients)]) for k, v in core.items()}
    own = F.one_hot(torch.tensor(OWN), args.clients).float()
    others = without_own_core(cores, own)
    p = torch.full((args.clients,), 1.0 / args.clients, requires_grad=True)
    x, y = torch.randn(10, 1, 28, 28, generator=generator), torch.randint(0, 10, (10,), generator=generator)

    def loss_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    def plain() -> None:
        torch.autograd.grad(loss_of(core), list(core.values()))

    def explicit() -> None:
        stack = with_own_core(cores, core, own)
        mixed = {k: torch.tensordot(p.detach(), v, dims=1) + torch.tensordot(p - p.detach(), v.detach(), dims=1)
                 for k, v in stack.items()}
        torch.autograd.grad(loss_of(mixed), [*core.values(), p])

    def constant_others() -> None:
        mixed = {k: torch.tensordot(p, s, dims=1) + (p * own).sum() * core[k] for k, s in others.items()}
        torch.autograd.grad(loss_of(mixed), [*core.values(), p])

    base = timed(plain, args.repeats)
    print(f"N = {args.clients} cores of {sum(v.numel() for v in core.values()):,} parameters, 1 thread")
    print(f"plain step (baseline)  {base:7.1f} ms/batch  1.00x")
    for name, step in [("explicit stack", explicit), ("constant others", constant_others)]:
        ms = timed(step, args.repeats)
        print(f"{name:<22} {ms:7.1f} ms/batch  {ms / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
