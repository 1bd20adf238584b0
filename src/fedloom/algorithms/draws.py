"""StepDraws: how an algorithm's batch loss names the random numbers it needs at every local step.

It lives on the algorithms' floor (algorithms build it; the local-SGD loops of the engines, one floor up, make the
draws), so an algorithm file never imports an engine module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class StepDraws:
    """What a batch loss draws at every step: ``draw(generator, batch_size)`` returns a tree of tensors (whose
    shapes may depend only on the batch's real size) from the client's ``purpose`` stream; the loss receives
    it as its last argument. The serial loop draws right before each step's loss; a vectorized pack draws per
    slot in the same order (nothing may draw under vmap), so both see the same numbers."""

    purpose: str
    draw: Callable[[torch.Generator, int], Any]
