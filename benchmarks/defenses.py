"""Server-side cost of every defense (robust aggregator) per round, against the plain mean (issue 19).

One round's aggregation at ``--clients`` uploads (default 50, Snowball's cohort) of FedAvgCNN-sized updates
(the ``cnn`` model on 1×28×28 inputs with 10 classes: Fashion-MNIST's shape, 582,026 parameters). The uploads
are synthetic but shaped like a backdoor round: a common update plus per-client noise, and ``--fraction`` of
them shifted together (the attackers), so the elections and clusterings do their normal amount of work.
FLTrust trains its root set (100 samples, ``--epochs`` local epochs at batch 10, Snowball's local settings) on
the offline ``mnist-5k`` dataset, which has the same input shape. Snowball runs with its paper defaults (ct = 10,
E^VI = 270, E^VT = 30, S^H = 256, S^L = 64) past its warm-up, so both elections run. One torch thread
(``torch.set_num_threads(1)``), CPU. Prints a Markdown table: median wall and CPU seconds per round over
``--repeats`` and the CPU ratio to the mean (CPU time is the figure to compare on a shared machine). Cost
only: the synthetic uploads say nothing about how well a defense selects.

    OMP_NUM_THREADS=1 python benchmarks/defenses.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from fedloom.config import RunConfig, make_component
from fedloom.pipeline.aggregators import AGGREGATORS
from fedloom.pipeline.context import AggregationContext

#: (label, registered name, options); the order of the table
DEFENSES: list[tuple[str, str, dict[str, Any]]] = [
    ("mean (FedAvg)", "mean", {}), ("median", "median", {}), ("trimmed-mean β=0.1", "trimmed-mean", {}),
    ("krum f=10", "krum", {"f": 10}), ("multi-krum f=10", "multi-krum", {"f": 10}),
    ("bulyan f=10", "bulyan", {"f": 10}), ("geomed (RFA, 3 it.)", "geomed", {}),
    ("norm-clip + weak DP", "norm-clip", {}), ("rlr θ=10", "rlr", {}), ("foolsgold", "foolsgold", {}),
    ("flame", "flame", {}), ("flame (snowball-repo)", "flame", {"variant": "snowball-repo"}),
    ("fltrust", "fltrust", {}), ("snowball-minus", "snowball-minus", {}), ("snowball", "snowball", {}),
    ("snowball (vae-fused)", "snowball", {"vae_fused": True}),
    ("ideal", "ideal", {}),
]


def runtime(clients: int, epochs: int, model: str) -> Any:
    """A real runtime (model, data, local SGD) for FLTrust's root-set training: ``model`` on mnist-5k."""
    from fedloom.run import build_experiment, load_data, resolve_config

    cfg = resolve_config(RunConfig(dataset="mnist-5k", model=model, clients=clients, rounds=1, local_epochs=epochs,
                                   batch_size=10, lr=0.01, momentum=0.9, weight_decay=5e-4, seed=0, device="cpu",
                                   threads=1, options={}))
    return build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu")).runtime


def uploads(template: dict[str, torch.Tensor], clients: int, fraction: float) -> tuple[list, frozenset[int]]:
    gen = torch.Generator().manual_seed(0)
    common = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in template.items()}
    shift = {k: 0.01 * torch.randn(v.shape, generator=gen) for k, v in template.items()}
    malicious = frozenset(range(round(fraction * clients)))
    items = []
    for client in range(clients):
        tree = {k: common[k] + 0.005 * torch.randn(v.shape, generator=gen) for k, v in template.items()}
        if client in malicious:
            tree = {k: v + shift[k] for k, v in tree.items()}
        items.append((client, tree, float(50 + client % 7)))
    return items, malicious


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="FLTrust's local epochs on the root set")
    parser.add_argument("--model", default="cnn", help="cnn (FedAvgCNN) or snowball-cnn (the Snowball paper's)")
    parser.add_argument("--only", nargs="*", help="registered names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rt = runtime(args.clients, args.epochs, args.model)
    params = {k: v.detach().clone() for k, v in rt.init_params.items()}
    items, malicious = uploads(params, args.clients, args.fraction)
    size = sum(v.numel() for v in params.values())
    print(f"{args.clients} uploads of {size:,} parameters ({args.model}, 1x28x28, 10 classes), {len(malicious)} "
          f"shifted; torch threads = {torch.get_num_threads()}; median of {args.repeats}\n")
    print("| defense | seconds / round | CPU seconds / round | × mean (CPU) |\n|---|---:|---:|---:|")
    baseline = None
    for label, name, options in DEFENSES:
        if args.only and name not in args.only:
            continue
        rule = make_component(AGGREGATORS, name, options)
        times, cpu_times = [], []
        for _ in range(args.repeats):
            ctx = AggregationContext(seed=0, round=100, global_params=params, malicious=malicious, services=rt)
            start, cpu_start = time.perf_counter(), time.process_time()
            rule.aggregate(items, ctx)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        seconds, cpu = statistics.median(times), statistics.median(cpu_times)
        baseline = cpu if name == "mean" else baseline
        ratio = f"{cpu / baseline:,.1f}" if baseline else "-"
        print(f"| {label} | {seconds:.3f} | {cpu:.3f} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
