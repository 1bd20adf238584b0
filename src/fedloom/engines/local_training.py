"""The local-training seam: options that change how ``ctx.local_sgd`` walks a client's data, for every algorithm
that trains with the shared loop (serial ``LocalSGD`` and the vectorized ``PackSGD``), never inside an algorithm.

A local-training component is selected by giving its option table (``--infobatch.prune-ratio 0.3`` or an
``[infobatch]`` table in a config file). It may keep per-client state (InfoBatch's scores); that state lives in
the engine's client-state store beside the algorithm's, under its own key, so checkpoints and resumes carry it.
"""

from __future__ import annotations

from typing import Any, Optional

from fedloom.algorithms.tree import Tree
from fedloom.registry import Registry

#: Local-training components (options dataclasses with ``schedule(cfg) -> a runtime object``).
LOCAL_TRAINING: Registry = Registry("local-training option")

#: Keys of a stored client state when a local-training component keeps state beside everything else.
TRAINING_KEY, REST_KEY = "__local_training__", "__rest__"


def selected_local_training(options: dict[str, Any]) -> list[str]:
    """Names of the local-training components whose option table is present (the table selects them)."""
    return [name for name in LOCAL_TRAINING.names() if name in options]


def split_training(stored: Optional[Tree]) -> tuple[Optional[Tree], Optional[Tree]]:
    """(everything else, the local-training state) of what the store holds for a client."""
    if isinstance(stored, dict) and TRAINING_KEY in stored:
        return stored.get(REST_KEY), stored[TRAINING_KEY]
    return stored, None


def join_training(rest: Optional[Tree], training: Optional[Tree]) -> Optional[Tree]:
    """What the store keeps: ``rest`` alone unless there is a local-training state."""
    if training is None:
        return rest
    return {TRAINING_KEY: training, **({} if rest is None else {REST_KEY: rest})}
