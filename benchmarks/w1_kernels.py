"""W1's training step below the stock kernels: FedAvgCNN (1x28x28 -> 10), batch 10, SGD, one torch thread.

Each variant trains the same sequence of real Fashion-MNIST batches from the same weights; the table gives the
median milliseconds per step over ``--repeats`` interleaved passes of ``--steps`` steps, the ratio to the stock
model (what a user writes: NCHW nn.Conv2d), and the largest difference of the trained weights from the stock
model's (float rounding only, or the variant changes the math). Variants:

  stock            nn.Conv2d in NCHW (plain_loop.stock_copy of fedloom's cnn)
  fedloom          fedloom's cnn as it ships (output of the first convolution channels_last, see models/cnn.py)
  no-mkldnn        fedloom's cnn with oneDNN disabled (torch.backends.mkldnn.flags(enabled=False))
  unfold-conv2     fedloom's cnn with the second convolution as unfold + one matmul (im2col by hand)
  relu-first       fedloom's cnn with each ReLU before its 2x2 max-pool (the order before fedloom put the pool
                   first: the same values, since ReLU is monotone and commutes with max; 4x the ReLU work)
  compiled         torch.compile (inductor, CPU) of fedloom's functional forward+backward+step; the compile time
                   is printed separately (it is paid once per process, so it belongs in a whole-run figure)

    OMP_NUM_THREADS=1 python benchmarks/w1_kernels.py --steps 200 --repeats 5 [--variants stock fedloom compiled]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def batches(steps: int, batch: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from fedloom.data.base import LoadContext
    from fedloom.data.array_cache import load_pooled
    from fedloom.data.cache import default_cache_dir
    from fedloom.data.options import make_dataset_spec

    pooled = load_pooled(make_dataset_spec("fashion-mnist", {}), LoadContext(None, 0, 1), default_cache_dir())
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(pooled), generator=g)[: steps * batch].split(batch)
    return [(pooled.x[i].clone(), pooled.y[i].clone()) for i in idx]


def fedloom_cnn() -> nn.Module:
    from fedloom.models.base import MODELS

    torch.manual_seed(1)
    return MODELS.get("cnn")().build((1, 28, 28), 10)


class UnfoldConv(nn.Conv2d):
    """A 5x5 valid convolution as im2col (F.unfold) and one matmul: the same parameters and math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size)  # [n, C*k*k, L]
        out = self.weight.flatten(1) @ cols + self.bias[:, None]
        return out.view(n, self.out_channels, h - self.kernel_size[0] + 1, w - self.kernel_size[1] + 1)


def with_conv(model: nn.Module, index: int, kind: type) -> nn.Module:
    """A copy of ``model`` whose body[index] convolution is replaced by ``kind`` with the same weights."""
    model = copy.deepcopy(model)
    old = model.body[index]
    new = kind(old.in_channels, old.out_channels, old.kernel_size)
    new.load_state_dict(old.state_dict())
    model.body[index] = new
    return model


class UnfoldConv1(nn.Conv2d):
    """The first convolution (one input channel) as im2col and one GEMM whose [n·L, out] result is already the
    channels_last layout: no direct-convolution kernel for C_in = 1, no layout conversion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        oh, ow = h - self.kernel_size[0] + 1, w - self.kernel_size[1] + 1
        cols = F.unfold(x, self.kernel_size).transpose(1, 2).reshape(n * oh * ow, -1)  # [n·L, C·k·k]
        out = torch.addmm(self.bias, cols, self.weight.flatten(1).t())  # [n·L, out]
        return out.view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)


def relu_first(model: nn.Module) -> nn.Module:
    """ReLU and max-pool swapped back in both convolution stages (indices 1-2 and 4-5 of the body)."""
    model = copy.deepcopy(model)
    body = model.body
    body[1], body[2], body[4], body[5] = body[2], body[1], body[5], body[4]
    return model


def module_step(model: nn.Module, lr: float = 0.005) -> Callable[[torch.Tensor, torch.Tensor], None]:
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    raw = [p.detach() for p in params]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        torch._foreach_add_(raw, grads, alpha=-lr)

    return step


def compiled_step(model: nn.Module, lr: float = 0.005) -> tuple[Callable, float, dict]:
    from torch.func import functional_call, grad

    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    def update(p: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
        g = grad(loss)(p, x, y)
        return {n: p[n] - lr * g[n] for n in p}

    fast = torch.compile(update)
    return fast, 0.0, params


def run_variant(name: str, model: nn.Module, data: list, mkldnn: bool = True) -> tuple[float, nn.Module]:
    step = module_step(model)
    t0 = time.perf_counter()
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        for x, y in data:
            step(x, y)
    return time.perf_counter() - t0, model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="+",
                        default=["stock", "fedloom", "no-mkldnn", "unfold-conv2", "compiled"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    from plain_loop import stock_copy

    data = batches(args.steps)
    base = fedloom_cnn()
    build = {"stock": lambda: stock_copy(base), "fedloom": lambda: copy.deepcopy(base),
             "no-mkldnn": lambda: copy.deepcopy(base), "unfold-conv2": lambda: with_conv(base, 3, UnfoldConv),
             "relu-first": lambda: relu_first(base), "unfold-conv1": lambda: with_conv(base, 0, UnfoldConv1)}
    seconds: dict[str, list[float]] = {v: [] for v in args.variants}
    final: dict[str, dict[str, torch.Tensor]] = {}
    compile_s = None
    for _ in range(args.repeats):
        for variant in args.variants:
            if variant == "compiled":
                fast, _, params = compiled_step(copy.deepcopy(base))
                if compile_s is None:
                    t0 = time.perf_counter()
                    fast(params, *data[0])
                    compile_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                for x, y in data:
                    params = fast(params, x, y)
                seconds[variant].append(time.perf_counter() - t0)
                final[variant] = params
                continue
            s, model = run_variant(variant, build[variant](), data, mkldnn=variant != "no-mkldnn")
            seconds[variant].append(s)
            final[variant] = {n: p.detach() for n, p in model.named_parameters()}
    ref = final.get("stock")
    print(f"FedAvgCNN batch 10, {args.steps} steps, 1 torch thread, median of {args.repeats} interleaved passes:")
    stock_ms = statistics.median(seconds["stock"]) / args.steps * 1e3 if "stock" in seconds else None
    for variant, s in seconds.items():
        ms = statistics.median(s) / args.steps * 1e3
        diff = max(float((final[variant][n] - ref[n]).abs().max()) for n in ref) if ref is not None else float("nan")
        ratio = f"{ms / stock_ms:.3f}" if stock_ms else "-"
        print(f"  {variant:<14}{ms:>8.3f} ms/step  {ratio:>6} x stock   max |Δw| vs stock {diff:.2e}")
    if compile_s is not None:
        print(f"  compile time (first call of the compiled step): {compile_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
