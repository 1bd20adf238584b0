"""Flower's simulation (Flower 1.42 on Ray; Beutel et al., "Flower: A Friendly Federated Learning Research
Framework", 2020) on the same partition and workload as benchmarks/engines.py, for the Ray engine's comparison
(issue 25). ``flwr[simulation]`` is a benchmark-only dependency: ``pip install "flwr[simulation]==1.42.*"``.

What runs: a ServerApp with Flower's FedAvg (the cohort's fraction of the nodes per round, weighted by train
size, no client-side evaluation: the server scores the global model on every client's test split, as the plain
loop does) and a ClientApp whose NumPyClient trains the workload's model with SGD, one epoch of batch 10, on the
client's fedloom train split. Data and partition come from fedloom's partition cache, loaded once per Flower
actor process. Each round's seconds are the time between two server-side evaluations (which run after every
round and take the same time in every system: they are subtracted using their own measured time). Round 1 also
starts Flower's actors and loads the data in each (~10 s here), so the steady state is the median of rounds 2..
(``median_warm_train_s_per_round``): run at least 3 rounds for a measurement.

    OMP_NUM_THREADS=1 python benchmarks/flower_sim.py --workload m1 --rounds 3 --workers 2
    OMP_NUM_THREADS=1 python benchmarks/flower_sim.py --workload m1 --rounds 1 --workers 1 --clients 20  # smoke

One torch thread per process; prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: The federation size when --clients overrides the workload's (read by Flower's actor processes too, which
#: inherit the environment of the local Ray cluster started by this process).
CLIENTS_VAR = "FEDLOOM_FLOWER_CLIENTS"


def workload_data(workload: str) -> tuple[Any, Any, Any]:
    """(config, data, a stock torch model) of a benchmarks/engines.py workload, once per process."""
    # the cache hangs on the sys module, never on a global of this script: cloudpickle sends a __main__
    # function's globals by value, so a global cache filled in the driver would travel, data and all, with the
    # client app in every message Flower sends to its actors (~0.8 s a client here)
    cache: dict[str, Any] = sys.__dict__.setdefault("_fedloom_flower_sim_cache", {})
    if workload not in cache:
        import torch
        torch.set_num_threads(1)
        sys.path.insert(0, str(Path(__file__).parent))
        from engines import run_config
        from plain_loop import stock_copy
        from fedloom.run import build_experiment, load_data

        cfg = run_config(workload, "serial", 1, None)
        if os.environ.get(CLIENTS_VAR):  # a smoke test's smaller federation, in the driver and every actor
            cfg = dataclasses.replace(cfg, clients=int(os.environ[CLIENTS_VAR]))
        data = load_data(cfg, torch.device("cpu"))
        exp = build_experiment(cfg, data, torch.device("cpu"))
        cache[workload] = (cfg, data, stock_copy(exp.runtime.model))
    return cache[workload]


def get_weights(model: Any) -> list:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def set_weights(model: Any, weights: list) -> None:
    import torch
    model.load_state_dict({k: torch.from_numpy(w.copy()) for k, w in zip(model.state_dict(), weights)})


def make_client_app(workload: str) -> Any:
    from flwr.client import ClientApp, NumPyClient
    import torch
    import torch.nn.functional as F

    class Client(NumPyClient):
        def __init__(self, client: int) -> None:
            self.client = client

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            cfg, data, model = workload_data(workload)
            set_weights(model, parameters)
            model.train()
            idx = data.train_idx[self.client]
            x, y = data.dataset.x, data.dataset.y
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
            for batch in idx[torch.randperm(len(idx))].split(cfg.batch_size):
                opt.zero_grad()
                F.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
            return get_weights(model), len(idx), {}

    def client_fn(context: Any) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn)


def make_server_app(workload: str, rounds: int, stamps: list) -> Any:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    import torch

    cfg, data, model = workload_data(workload)

    @torch.no_grad()
    def evaluate(server_round: int, parameters: list, config: dict) -> tuple[float, dict]:
        t0 = time.perf_counter()
        set_weights(model, parameters)
        model.eval()
        correct = count = 0
        for idx in data.test_idx:
            for chunk in idx.split(1000):
                correct += int((model(data.dataset.x[chunk]).argmax(1) == data.dataset.y[chunk]).sum())
                count += len(chunk)
        stamps.append((server_round, t0, time.perf_counter(), correct / count))
        return 0.0, {"accuracy": correct / count}

    def server_fn(context: Any) -> Any:
        cohort = max(1, round(cfg.clients * cfg.join_ratio))
        strategy = FedAvg(fraction_fit=cfg.join_ratio, fraction_evaluate=0.0, min_fit_clients=cohort,
                          min_evaluate_clients=0, min_available_clients=cfg.clients, evaluate_fn=evaluate,
                          initial_parameters=ndarrays_to_parameters(get_weights(model)))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    return ServerApp(server_fn=server_fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="m1", choices=["w1", "m1"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Flower's Ray actors (one CPU each)")
    parser.add_argument("--clients", type=int, default=None, help="override the workload's clients (smoke tests)")
    args = parser.parse_args()
    if args.clients is not None:
        os.environ[CLIENTS_VAR] = str(args.clients)
    from flwr.simulation import run_simulation

    cfg, data, _ = workload_data(args.workload)
    stamps: list = []
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(args.workload, args.rounds, stamps),
                   client_app=make_client_app(args.workload), num_supernodes=cfg.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": args.workers, "include_dashboard": False}})
    wall = time.perf_counter() - t0
    # round r's training: from the end of evaluation r-1 to the start of evaluation r
    train = [stamps[i][1] - stamps[i - 1][2] for i in range(1, len(stamps))]
    evaluation = [s[2] - s[1] for s in stamps]
    print(json.dumps({"system": "flower-1.42-simulation", "workload": args.workload, "clients": cfg.clients,
                      "rounds": args.rounds,
                      "workers": args.workers, "train_seconds_per_round": [round(s, 2) for s in train],
                      "median_train_s_per_round": round(statistics.median(train), 3) if train else None,
                      # round 1 also starts the actors and loads the data in each: rounds 2.. are the steady state
                      "median_warm_train_s_per_round": round(statistics.median(train[1:]), 3) if train[1:] else None,
                      "eval_seconds_median": round(statistics.median(evaluation), 3) if evaluation else None,
                      "accuracy": [round(s[3], 4) for s in stamps], "wall_seconds": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
