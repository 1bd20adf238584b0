"""Collecting client uploads for the server step.

Most algorithms only need the weighted mean of uploads, which is a sum and can therefore be reduced per
pack, per worker and per machine (``merge``). The running sum is kept in float64 so the result does not
depend (beyond float32 rounding of the final cast) on the order in which clients finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map


@dataclass
class Uploads:
    """What the server step receives: the reduced weighted sum and, if requested, every upload."""

    weighted_sum: Optional[Tree]
    total_weight: float
    count: int
    items: Optional[list[tuple[int, Tree, float]]] = None  # (client id, upload, weight), by client id
    #: the run's server aggregator (fedloom.pipeline.aggregators); None or a reducible one: the weighted mean
    aggregator: Optional[Any] = None
    #: the round's fedloom.pipeline.context.AggregationContext, handed to the aggregator
    context: Optional[Any] = None

    def weighted_mean(self) -> Optional[Tree]:
        """What an averaging server combines the uploads into: Σ_i w_i u_i / Σ_i w_i in the uploads' dtype (or
        the run's robust aggregator, ``--aggregator median`` etc., applied to every upload), None when nobody
        uploaded. Algorithms call this and stay unaware of the rule."""
        if self.aggregator is not None and self.aggregator.needs_all:
            return self.aggregator.aggregate(self.all(), self.context) if self.count else None
        if getattr(self.aggregator, "reduces", False):  # a step on the reduced sum (central DP noise)
            return self.aggregator.reduce(self.weighted_sum, self.total_weight, self.count, self.context)
        if self.weighted_sum is None or self.total_weight <= 0:
            return None
        return tree_map(lambda s: (s / self.total_weight).to(torch.float32), self.weighted_sum)

    def all(self) -> list[tuple[int, Tree, float]]:
        if self.items is None:
            raise RuntimeError("this algorithm must declare aggregation = 'all' to see individual uploads")
        return self.items


@dataclass
class UploadAccumulator:
    keep_all: bool = False
    weighted_sum: Optional[Tree] = None
    total_weight: float = 0.0
    count: int = 0
    items: list[tuple[int, Tree, float]] = field(default_factory=list)

    def add(self, client_id: int, upload: Optional[Tree], weight: float) -> None:
        if upload is None:
            return
        self.count += 1
        w = float(weight)
        self.total_weight += w
        # float64 running sum, updated in place (one temporary per leaf, not three: on M1 the sum of a client's
        # 200k-parameter upload was a tenth of its update); the same roundings as sum + upload·w
        if self.weighted_sum is None:
            self.weighted_sum = tree_map(lambda u: u.detach().to(torch.float64, copy=True).mul_(w), upload)
        else:
            tree_map(lambda s, u: s.add_(u.detach().to(torch.float64, copy=True).mul_(w)), self.weighted_sum, upload)
        if self.keep_all:
            self.items.append((client_id, upload, float(weight)))

    def add_stacked(self, client_ids: list[int], uploads: Optional[Tree], weights: torch.Tensor) -> None:
        """Add uploads stacked along a leading client axis (from a vectorized pack) in one reduction."""
        if uploads is None:
            return
        w = weights.detach().to(torch.float64)
        # a float32 matrix-vector product (then float64 for the running sum): converting the whole stack to
        # float64 first would cost more than the training step of a small model
        contribution = tree_map(lambda u: torch.tensordot(w.to(u.device, u.dtype), u.detach(), dims=1).double()
                                if u.is_floating_point() else  # bool/int leaves (class masks): as ``add`` does
                                torch.tensordot(w.to(u.device), u.detach().double(), dims=1), uploads)
        self.weighted_sum = contribution if self.weighted_sum is None else tree_map(
            torch.add, self.weighted_sum, contribution)
        self.total_weight += float(w.sum())
        self.count += len(client_ids)
        if self.keep_all:
            for position, client_id in enumerate(client_ids):
                self.items.append((client_id, tree_map(lambda u: u[position].clone(), uploads),
                                   float(w[position])))

    def merge(self, other: "UploadAccumulator") -> None:
        """Fold in a partial accumulator (from another pack or worker)."""
        if other.weighted_sum is not None:  # a copy: ``add`` updates this accumulator's sum in place
            self.weighted_sum = tree_map(torch.clone, other.weighted_sum) if self.weighted_sum is None else tree_map(
                torch.add, self.weighted_sum, other.weighted_sum)
        self.total_weight += other.total_weight
        self.count += other.count
        self.items.extend(other.items)

    def finish(self) -> Uploads:
        items = sorted(self.items, key=lambda item: item[0]) if self.keep_all else None
        return Uploads(self.weighted_sum, self.total_weight, self.count, items)


@dataclass
class HeldUploads:
    """An accumulator that keeps each client's decoded upload and weight instead of adding them: the Ray
    engine's ordered reduction later ``replay``s them into the running sum passed along the cohort's order,
    which then makes exactly the serial engine's additions (``UploadAccumulator.add``, in the same order)."""
    adds: dict[int, tuple[Optional[Tree], float]] = field(default_factory=dict)

    def add(self, client_id: int, upload: Optional[Tree], weight: float) -> None:
        self.adds[client_id] = (upload, weight)

    def replay(self, into: UploadAccumulator, clients: list[int]) -> UploadAccumulator:
        for client in clients:
            into.add(client, *self.adds[client])
        return into


def merge_uploads(parts: list[Uploads], keep_all: bool = False) -> Uploads:
    """Combine partial Uploads (e.g. one per worker) into one, as if one accumulator had seen every client."""
    total = UploadAccumulator(keep_all=keep_all)
    for part in parts:
        total.merge(UploadAccumulator(keep_all, part.weighted_sum, part.total_weight, part.count,
                                      list(part.items or [])))
    return total.finish()
