"""The Task interface: loss for training, additive sums for evaluation, and how to turn sums into metrics.

Evaluation returns *sums* (e.g. correct predictions, summed loss, sample count) rather than averages so that
results from clients, packs and workers combine exactly by addition: accuracy = Σ correct / Σ samples.
"""

from __future__ import annotations

from typing import Protocol

import torch

from fedloom.registry import Registry


class Task(Protocol):
    #: the metric that "best"/"final" in summaries refer to, e.g. "accuracy"
    primary_metric: str

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, shape [batch]. Training minimizes its (weighted) mean."""
        ...

    def eval_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive evaluation statistics of one batch (0-dim tensors), including 'count'."""
        ...

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from accumulated sums, e.g. accuracy = correct / count."""
        ...


TASKS: Registry[type] = Registry("task")
