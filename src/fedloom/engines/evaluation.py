"""Lean evaluation shared by every engine.

Clients that are scored with the *same* parameter object (the broadcast model, for every non-personalized
algorithm) are evaluated together: their test indices are concatenated and run through the model in large
batches, and the outputs are split back per client for the additive task sums. Personalized clients are
evaluated one at a time as they stream past, so memory never holds more than one client's parameters.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

from fedloom.algorithms.tree import Params
from fedloom.engines.context import Runtime

Sums = dict[str, float]


@torch.no_grad()
def forward_in_chunks(runtime: Runtime, params: Params, indices: torch.Tensor,
                      inputs: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Model outputs for ``indices``; ``inputs`` changes each chunk's inputs first (a split's view)."""
    x = runtime.data.dataset.x
    view = inputs or (lambda batch: batch)
    outputs = [runtime.apply(params, view(x[chunk])) for chunk in indices.split(runtime.eval_batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def sums_of(runtime: Runtime, outputs: torch.Tensor, targets: torch.Tensor) -> Sums:
    return {key: float(value) for key, value in runtime.task.eval_sums(outputs, targets).items()}


def evaluate_group(runtime: Runtime, params: Params, clients: list[tuple[int, torch.Tensor]],
                   split: str = "test") -> dict[int, Sums]:
    """Evaluate several clients that share ``params`` with one pass over their concatenated indices (of
    ``split``: a split with a view, the attack's poisoned one, changes inputs and targets)."""
    if not clients:
        return {}
    indices = torch.cat([idx for _, idx in clients])
    view = runtime.uploads.eval_view(split)
    outputs = forward_in_chunks(runtime, params, indices, None if view is None else view.stamp)
    targets = runtime.data.dataset.y[indices]
    targets = targets if view is None else view.relabel(targets)
    results, start = {}, 0
    for client_id, idx in clients:
        stop = start + idx.shape[0]
        results[client_id] = sums_of(runtime, outputs[start:stop], targets[start:stop])
        start = stop
    return results


def evaluate_stream(runtime: Runtime, items: Iterable[tuple[int, Params]], shared: Params,
                    split: str = "test") -> dict[int, Sums]:
    """Per-client sums for a stream of (client id, eval params); clients whose params are ``shared`` (by
    identity) are pooled into one big-batch pass."""
    pooled: list[tuple[int, torch.Tensor]] = []
    results: dict[int, Sums] = {}
    for client_id, params in items:
        idx = split_indices(runtime, client_id, split)
        if params is shared:
            pooled.append((client_id, idx))
        else:  # the client's own architecture (a mixed federation never shares parameters)
            results.update(evaluate_group(runtime.for_client(client_id), params, [(client_id, idx)], split))
    results.update(evaluate_group(runtime, shared, pooled, split))
    return dict(sorted(results.items()))


def split_indices(runtime: Runtime, client_id: int, split: str) -> torch.Tensor:
    """A client's samples of ``split``: its training samples for "train", else its test samples, of which a
    split with a view (the attack's poisoned split) keeps those the view counts."""
    data = runtime.data
    if split == "train":
        return data.train_idx[client_id]
    indices = data.test_idx[client_id]
    view = runtime.uploads.eval_view(split)
    return indices if view is None else indices[view.keep(data.dataset.y[indices])]
