"""The client-context protocol: everything an algorithm may touch while it runs a client, in one place.

Both engine contexts implement it — ``engines.context.ClientContext`` (one client) and
``engines.pack_context.PackContext`` (a pack of clients in lockstep, values with a leading client axis). A
member a pack cannot batch is still present on the pack context and raises ``NotVectorizable`` with a message
that names it, which sends the algorithm to the serial path with one warning (never an AttributeError).
``tests/algorithms/test_contract.py`` checks both against this list.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch

from fedloom.algorithms.tree import Params

#: Keyword arguments of ``local_sgd`` (both contexts accept every one of them).
LOCAL_SGD_OPTIONS = ("epochs", "lr", "purpose", "indices", "extra_loss", "batch_loss", "grad_correction",
                     "trainable", "aux", "batch_size", "steps_per_batch", "after_batch")


@runtime_checkable
class ClientContextProtocol(Protocol):
    round: int

    @property
    def client_id(self) -> int: ...
    @property
    def sgd(self) -> Any: ...
    @property
    def train_indices(self) -> torch.Tensor: ...
    @property
    def test_indices(self) -> torch.Tensor: ...
    @property
    def num_train_samples(self) -> Any: ...
    @property
    def total_rounds(self) -> int: ...
    @property
    def init_params(self) -> Params: ...

    def train_label_counts(self) -> torch.Tensor: ...
    def mean_loss(self, params: Params, indices: torch.Tensor) -> torch.Tensor: ...
    def generator(self, purpose: str, round_: Optional[int] = None) -> torch.Generator: ...
    def data(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor: ...
    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...
    def per_client(self, fn: Callable[..., Any], *trees: Any) -> Any: ...
    def local_sgd(self, params: Params, **options: Any) -> tuple[Params, dict[str, Any]]: ...
    def local_sgd_carry(self, params: Params, carry: Any, batch_loss: Any,
                        **options: Any) -> tuple[Params, Any, dict[str, Any]]: ...
    def evaluate(self, params: Params, split: str = "test") -> dict[str, Any]: ...


#: Every member name of the protocol (what the contract test walks).
MEMBERS = ("round", "client_id", "sgd", "train_indices", "test_indices", "num_train_samples", "total_rounds", "init_params",
           "train_label_counts", "mean_loss", "generator", "data", "apply", "task_loss", "per_client",
           "local_sgd", "local_sgd_carry", "evaluate")
