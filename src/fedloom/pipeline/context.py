"""What a transform or attack may know about the client whose upload it processes."""

from __future__ import annotations

from dataclasses import dataclass, field

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


#: Key of ``ServerState.extra`` under which a stateful aggregator's memory is kept (and checkpointed).
AGGREGATOR_STATE_KEY = "__aggregator__"


@dataclass
class AggregationContext:
    """What a server aggregator may know in one round, beside the uploads themselves.

    ``global_params`` are the server's parameters the cohort trained from (uploads of most algorithms are
    updates relative to them). ``malicious`` is the threat model's set of malicious ids: only an oracle
    ("ideal") or a metric may read it, never a real defense. ``state`` is the aggregator's own memory across
    rounds (a tree with string keys: FoolsGold's histories, Snowball's VAE); it is kept in the server state and
    checkpointed with it. ``metrics`` are reported as ``server_<key>`` in metrics.jsonl (e.g. the true/false
    positive rates of the clients a selecting defense admitted). Randomness only through :meth:`generator`."""

    seed: int
    round: int
    global_params: dict
    malicious: frozenset[int] = frozenset()
    state: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: services of the runtime a defense may use (FLTrust's root-set training): set by the round, may be None
    services: object = None
    #: (q, n): this is server step q of the round's n (the cyclic pattern steps after every client; star once)
    step: tuple[int, int] = (0, 1)

    @property
    def ends_round(self) -> bool:
        """Whether this server step is the round's last (the only one in the star pattern)."""
        return self.step[0] == self.step[1] - 1

    def generator(self, purpose: str) -> torch.Generator:
        return torch_generator(self.seed, self.round, -1, f"aggregate:{purpose}")
