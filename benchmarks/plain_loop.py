"""A plain, hand-written PyTorch FedAvg loop: the baseline every fedloom engine is timed against.

One ``nn.Module`` reused for every client, ``torch.optim.SGD``, ``loss.backward()``, state-dict averaging
weighted by client train size, and evaluation of every client's test split with the global model. It uses
fedloom only for the partition (so both see the same clients) and, optionally, for each client's batch order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from fedloom.run import sample_cohort
from fedloom.seeding import torch_generator


def stock_copy(model: nn.Module) -> nn.Module:
    """A trainable deep copy of a fedloom model with stock torch layers only (fedloom's layout-tuned layers
    swapped for plain nn.Conv2d with the same weights, each max-pool back after its ReLU), so the baseline is what a
    user would write."""
    import copy

    clone = copy.deepcopy(model).requires_grad_(True)
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d:
                stock = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                  child.padding, child.dilation, child.groups, child.bias is not None)
                stock.load_state_dict(child.state_dict())
                setattr(parent, name, stock)
    for seq in [m for m in clone.modules() if isinstance(m, nn.Sequential)]:  # a user writes ReLU, then pool
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.MaxPool2d) and isinstance(seq[i + 1], nn.ReLU):
                seq[i], seq[i + 1] = seq[i + 1], seq[i]
    return clone


class PlainFedAvg:
    def __init__(self, model: nn.Module, data, lr: float, batch: int, epochs: int, seed: int,
                 join_ratio: float = 1.0, same_batches: bool = True) -> None:
        self.model, self.data = model, data
        self.x, self.y = data.dataset.x, data.dataset.y
        self.global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.lr, self.batch, self.epochs, self.seed = lr, batch, epochs, seed
        self.join_ratio, self.same_batches = join_ratio, same_batches
        torch.manual_seed(seed)

    def order(self, round_: int, client: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(n, generator=generator) if self.same_batches else torch.randperm(n)

    def train_client(self, round_: int, client: int) -> dict[str, torch.Tensor]:
        idx = self.data.train_idx[client]
        self.model.load_state_dict(self.global_state)
        self.model.train()
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        generator = torch_generator(self.seed, round_, client, "train")
        for _ in range(self.epochs):
            for batch in idx[self.order(round_, client, len(idx), generator)].split(self.batch):
                opt.zero_grad()
                F.cross_entropy(self.model(self.x[batch]), self.y[batch]).backward()
                opt.step()
        return self.model.state_dict()

    def round(self, round_: int) -> float:
        self.train_round(round_)
        return self.evaluate()

    def train_round(self, round_: int) -> None:
        cohort = sample_cohort(self.data.num_clients, self.join_ratio, self.seed, round_)
        total = sum(len(self.data.train_idx[c]) for c in cohort)
        new_state = {k: torch.zeros_like(v) for k, v in self.global_state.items()}
        for client in cohort:
            share = len(self.data.train_idx[client]) / total
            for k, v in self.train_client(round_, client).items():
                new_state[k] += v * share
        self.global_state = new_state

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.load_state_dict(self.global_state)
        self.model.eval()
        correct = count = 0
        for idx in self.data.test_idx:
            for chunk in idx.split(1000):
                correct += int((self.model(self.x[chunk]).argmax(1) == self.y[chunk]).sum())
                count += len(chunk)
        return correct / count


def main() -> int:
    """A whole plain run (benchmarks/whole_run.py): imports, fedloom's partition, the loop, evaluation every
    ``--eval-every`` rounds; prints one JSON line with the seconds spent in rounds and the last accuracy."""
    parser = argparse.ArgumentParser(description="the plain FedAvg loop as a whole run")
    for name, kind in (("--dataset", str), ("--partition", str), ("--alpha", float), ("--clients", int),
                       ("--model", str), ("--join-ratio", float), ("--lr", float), ("--rounds", int),
                       ("--eval-every", int), ("--seed", int)):
        parser.add_argument(name, type=kind, required=True)
    a = parser.parse_args()
    torch.set_num_threads(1)
    from fedloom.config import RunConfig
    from fedloom.engines.build import build_models, load_data
    from fedloom.run import resolve_config

    device = torch.device("cpu")
    cfg = resolve_config(RunConfig(dataset=a.dataset, partition=a.partition, alpha=a.alpha, clients=a.clients,
                                   model=a.model, join_ratio=a.join_ratio, lr=a.lr, rounds=a.rounds, seed=a.seed,
                                   batch_size=10, local_epochs=1, device="cpu", threads=1, out="/tmp/unused"))
    data = load_data(cfg, device)
    cfg, models = build_models(cfg, data, device)
    plain = PlainFedAvg(stock_copy(models[0][0]), data, cfg.lr, 10, 1, cfg.seed, cfg.join_ratio)
    t0, accuracy = time.perf_counter(), plain.evaluate()  # round 0, as fedloom runs evaluate the initial model
    for r in range(1, a.rounds + 1):
        plain.train_round(r)
        if r % a.eval_every == 0 or r == a.rounds:
            accuracy = plain.evaluate()
    print(json.dumps({"round_seconds": time.perf_counter() - t0, "accuracy": accuracy}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
