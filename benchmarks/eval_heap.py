"""Evaluation throughput of FedAvgCNN by chunk size, in the tuned or the system heap (docs/benchmarks.md, "The C
heap"). One torch thread; samples per second, median of 5 passes over 4,096 random inputs. Run each mode in its
own process (the heap setting is per process), alternating:

    OMP_NUM_THREADS=1 python benchmarks/eval_heap.py tuned
    OMP_NUM_THREADS=1 python benchmarks/eval_heap.py system
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedloom.engines.heap import configure_heap
from fedloom.models.base import MODELS

CHUNKS = (128, 256, 512, 1024, 4096)


def samples_per_second(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk]).argmax(1)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heap", choices=("tuned", "system"))
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    configure_heap(args.heap)
    torch.set_num_threads(1)
    model = MODELS.get("cnn")().build((1, 28, 28), 10).eval()
    x = torch.randn(4096, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rates: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
    for _ in range(args.passes):  # chunk sizes interleaved within each pass
        for chunk in CHUNKS:
            rates[chunk].append(samples_per_second(model, x, chunk))
    print(args.heap, {chunk: int(statistics.median(r)) for chunk, r in rates.items()}, "samples/s by chunk")


if __name__ == "__main__":
    main()
