"""What a transform or attack may know about the client whose upload it processes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedloom.seeding import torch_generator


@dataclass(frozen=True)
class TransformContext:
    """One client in one round. Randomness only through :meth:`generator`, a stream of its own per (root seed,
    round, client, purpose), so results never depend on engine, worker or order."""

    seed: int
    round: int
    client_id: int
    malicious: bool = False
    clip_norm: float = 0.0  # the chain's clipping norm (0 when it has none): noise is scaled to it

    def generator(self, purpose: str) -> torch.Generator:
        return torch_generator(self.seed, self.round, self.client_id, f"upload:{purpose}")
