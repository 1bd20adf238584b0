"""Per-client overhead of a FedAvg client update, outside its arithmetic (issue "Fast from the first second").

One M1 cohort (Fashion-MNIST, 1,000 clients Dir(0.5), MLP 784-200-200-10, batch 10, 1 epoch, lr 0.05, the 100
clients of round 1) is trained four ways in this process, one torch thread, interleaved ``--repeats`` times and
reported as the median microseconds per client:

  plain       the hand-written loop of benchmarks/plain_loop.py (nn.Module, torch.optim.SGD, backward)
  arithmetic  the same batches through the model with explicit parameter leaves and autograd.grad, updated with
              one foreach add: what fedloom's loop computes, with none of its bookkeeping
  local_sgd   fedloom's LocalSGD.run alone (the model called through apply_with / functional_call)
  client      the serial engine's whole per-client path: context, state load, client_update, the upload
              pipeline, the state save and the accumulator (SerialEngine.train_cohort)

client − arithmetic is the overhead this issue asks to cut; local_sgd − arithmetic is the part inside the loop.

    OMP_NUM_THREADS=1 python benchmarks/client_overhead.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def build(out: str):
    from fedloom.config import RunConfig
    from fedloom.run import build_experiment, load_data, resolve_config

    cfg = resolve_config(RunConfig(
        dataset="fashion-mnist", partition="dirichlet", alpha=0.5, clients=1000, join_ratio=0.1, model="mlp",
        algorithm="fedavg", lr=0.05, batch_size=10, local_epochs=1, rounds=1, seed=1, device="cpu", threads=1,
        out=out, options={"mlp": {"hidden": 200, "layers": 2}}))
    data = load_data(cfg, torch.device("cpu"))
    return build_experiment(cfg, data, torch.device("cpu"))


def time_plain(exp, cohort: list[int]) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from plain_loop import PlainFedAvg, stock_copy

    cfg = exp.config
    plain = PlainFedAvg(stock_copy(exp.runtime.model), exp.data, cfg.lr, cfg.batch_size, cfg.local_epochs,
                        cfg.seed)
    t0 = time.perf_counter()
    for client in cohort:
        plain.train_client(1, client)
    return time.perf_counter() - t0


def time_arithmetic(exp, cohort: list[int]) -> float:
    from fedloom.engines.local_sgd import epoch_batches
    from fedloom.seeding import torch_generator

    model, cfg, x, y = exp.runtime.model, exp.config, exp.data.dataset.x, exp.data.dataset.y
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    t0 = time.perf_counter()
    for client in cohort:
        params = [t.detach().clone().requires_grad_(True) for m in layers for t in (m.weight, m.bias)]
        batches = epoch_batches(exp.data.train_idx[client], cfg.batch_size, torch_generator(cfg.seed, 1, client,
                                                                                               "train"))
        for batch in batches:
            h = x[batch].flatten(1)
            for i in range(0, len(params) - 2, 2):
                h = torch.relu(torch.nn.functional.linear(h, params[i], params[i + 1]))
            logits = torch.nn.functional.linear(h, params[-2], params[-1])
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y[batch]), params)
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-cfg.lr)
    return time.perf_counter() - t0


def time_local_sgd(exp, cohort: list[int]) -> float:
    params = dict(exp.runtime.init_params)
    t0 = time.perf_counter()
    for client in cohort:
        exp.runtime.client_context(client, 1).local_sgd(params)
    return time.perf_counter() - t0


def time_client(exp, cohort: list[int]) -> float:
    from fedloom.rounds import federation_of

    broadcast = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data)).broadcast
    t0 = time.perf_counter()
    exp.engine.train_cohort(exp.algorithm, broadcast, cohort, 1)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench-out/client-overhead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from fedloom.run import sample_cohort

    exp = build(args.out)
    cohort = sample_cohort(exp.data.num_clients, exp.config.join_ratio, exp.config.seed, 1)
    ways = {"plain": time_plain, "arithmetic": time_arithmetic, "local_sgd": time_local_sgd, "client": time_client}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            seconds[name].append(fn(exp, cohort))
    per_client = {name: statistics.median(s) / len(cohort) * 1e6 for name, s in seconds.items()}
    base = per_client["arithmetic"]
    print(f"M1 cohort of {len(cohort)} clients, 1 torch thread, median of {args.repeats} (µs per client):")
    for name, us in per_client.items():
        print(f"  {name:<11}{us:>9.0f}  ({us / base:.2f}x arithmetic)")
    print(f"  overhead outside the arithmetic: {per_client['client'] - base:.0f} µs per client "
          f"({(per_client['client'] - base) / per_client['client']:.0%} of a client update)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
