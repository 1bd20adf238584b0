"""Runtime (what an engine shares across clients) and ClientContext (an algorithm's only door to data,
the model and randomness while it runs one client)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch
from torch.func import functional_call

from fedloom.algorithms.tree import Params
from fedloom.data.federated import FederatedData
from fedloom.engines.local_sgd import BatchLoss, ExtraLoss, GradCorrection, LocalSGD, SGDConfig
from fedloom.engines.state_store import ClientStateStore
from fedloom.models.base import SplitModel
from fedloom.seeding import torch_generator
from fedloom.tasks.base import Task


@dataclass
class Runtime:
    model: SplitModel  # a template whose own parameters are never trained; used via functional_call
    task: Task
    data: FederatedData  # tensors already on ``device``
    sgd: SGDConfig
    seed: int
    device: torch.device
    store: ClientStateStore
    init_params: Params
    eval_batch_size: int = 1000

    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        return functional_call(self.model, params, (x,), {"part": part}, strict=False)

    def batch_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.mean_loss(self.apply(params, x), y)

    def per_sample_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.per_sample_loss(self.apply(params, x), y)

    def client_context(self, client_id: int, round_: int) -> "ClientContext":
        return ClientContext(self, client_id, round_)


class ClientContext:
    """Everything an algorithm may touch while running client ``client_id`` in round ``round``."""

    def __init__(self, runtime: Runtime, client_id: int, round_: int) -> None:
        self.runtime = runtime
        self.client_id = client_id
        self.round = round_

    @property
    def sgd(self) -> SGDConfig:
        return self.runtime.sgd

    @property
    def train_indices(self) -> torch.Tensor:
        return self.runtime.data.train_idx[self.client_id]

    @property
    def test_indices(self) -> torch.Tensor:
        return self.runtime.data.test_idx[self.client_id]

    @property
    def num_train_samples(self) -> int:
        return int(self.train_indices.shape[0])

    def generator(self, purpose: str) -> torch.Generator:
        """A generator unique to (root seed, round, client, purpose)."""
        return torch_generator(self.runtime.seed, self.round, self.client_id, purpose)

    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        return self.runtime.apply(params, x, part)

    def per_client(self, fn: Callable[..., Any], *trees: Any) -> Any:
        """Apply ``fn`` to this client's trees. Use it for any reduction over parameters outside the local-SGD
        hooks (norms, distances, similarities): under the serial engine it is just ``fn(*trees)``; a vectorized
        engine, whose trees carry a leading client axis, maps ``fn`` over that axis instead of letting it
        reduce across clients."""
        return fn(*trees)

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample task loss of model outputs (for ``batch_loss`` hooks that add terms to it)."""
        return self.runtime.task.per_sample_loss(outputs, targets)

    def local_sgd(self, params: Params, *, epochs: Optional[int] = None, lr: Optional[float] = None,
                  purpose: str = "train", indices: Optional[torch.Tensor] = None,
                  extra_loss: Optional[ExtraLoss] = None, batch_loss: Optional[BatchLoss] = None,
                  grad_correction: Optional[GradCorrection] = None,
                  trainable: Optional[Callable[[str], bool]] = None,
                  aux: Any = None) -> tuple[Params, dict[str, float]]:
        """Local SGD from ``params`` on this client's training data (or ``indices``); see LocalSGD for the
        hooks. Per-client tensors the hooks need go in ``aux`` (never in a closure)."""
        cfg = self.sgd
        if epochs is not None or lr is not None:
            cfg = replace(cfg, epochs=cfg.epochs if epochs is None else epochs, lr=cfg.lr if lr is None else lr)
        runner = LocalSGD(self.runtime.batch_loss, self.runtime.data.dataset.x, self.runtime.data.dataset.y,
                          describe=f"client {self.client_id}, round {self.round}")
        return runner.run(params, self.train_indices if indices is None else indices, cfg,
                          self.generator(purpose), extra_loss=extra_loss, batch_loss=batch_loss,
                          grad_correction=grad_correction, trainable=trainable, aux=aux)

    @torch.no_grad()
    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        """Additive task statistics (e.g. correct, loss_sum, count) of ``params`` on a split of this client."""
        indices = self.test_indices if split == "test" else self.train_indices
        x, y = self.runtime.data.dataset.x, self.runtime.data.dataset.y
        sums: dict[str, torch.Tensor] = {}
        for chunk in indices.split(self.runtime.eval_batch_size):
            batch_sums = self.runtime.task.eval_sums(self.apply(params, x[chunk]), y[chunk])
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0) + value.double()
        return {key: float(value) for key, value in sums.items()}
