"""Evaluation throughput of FedAvgCNN by chunk size, in the tuned or the system heap (docs/benchmarks.md, "The C
heap"). One torch thread; samples per second, median of 5 passes over 4,096 random inputs.

    OMP_NUM_THREADS=1 python benchmarks/eval_heap.py tuned
    OMP_NUM_THREADS=1 python benchmarks/eval_heap.py system
"""
import sys, time, statistics, torch
from fedloom.engines.heap import configure_heap
configure_heap(sys.argv[1]); torch.set_num_threads(1)
from fedloom.models.base import MODELS
m = MODELS.get("cnn")().build((1, 28, 28), 10).eval()
x = torch.randn(4096, 1, 28, 28)
res = {c: [] for c in (128, 256, 512, 1024, 4096)}
for _ in range(5):
    for c in res:
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(x), c):
                m(x[i:i + c]).argmax(1)
        res[c].append(len(x) / (time.perf_counter() - t))
print(sys.argv[1], {c: int(statistics.median(v)) for c, v in res.items()})
