"""A one-parameter quadratic client for hand-computed checks of the federated-optimization methods: the real
local-SGD loop (engines/local_sgd.py) on f(w) = ½‖w − b‖², one full-batch step per epoch, behind the few
members of the client context those algorithms use."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from fedloom.algorithms.tree import Params, Tree
from fedloom.algorithms.uploads import UploadAccumulator, Uploads
from fedloom.engines.local_sgd import LocalSGD, SGDConfig


@dataclass
class QuadraticContext:
    target: float  # b
    lr: float = 0.1
    epochs: int = 2
    momentum: float = 0.0
    samples: int = 10
    round: int = 1

    @property
    def sgd(self) -> SGDConfig:
        return SGDConfig(lr=self.lr, batch_size=1, epochs=self.epochs, momentum=self.momentum)

    @property
    def num_train_samples(self) -> int:
        return self.samples

    def per_client(self, fn: Any, *trees: Any) -> Any:
        return fn(*trees)

    def local_sgd(self, params: Params, *, epochs: Optional[int] = None, **hooks: Any) -> tuple[Params, dict]:
        b = torch.tensor([self.target])

        def loss(w: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return 0.5 * (w["w"] - b).pow(2).sum()

        cfg = self.sgd if epochs is None else replace(self.sgd, epochs=epochs)
        runner = LocalSGD(loss, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), "quadratic")
        return runner.run(params, torch.arange(1), cfg, torch.Generator().manual_seed(0), **hooks)


def scalar(value: float) -> Params:
    return {"w": torch.tensor([value])}


def uploads_of(items: list[tuple[Tree, float]]) -> Uploads:
    acc = UploadAccumulator()
    for cid, (upload, weight) in enumerate(items):
        acc.add(cid, upload, weight)
    return acc.finish()


def value(tree: Tree) -> float:
    return float(tree["w"]) if isinstance(tree, dict) else float(tree)
