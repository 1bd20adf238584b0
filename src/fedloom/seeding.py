"""Every random draw derives from (root seed, round, client, purpose).

Streams are independent of execution order: client 7's batch order in round 3 is the same whether it trains
first or last, alone or in a vectorized pack, in this process or a worker. Use round=-1 / client=-1 for draws
that belong to no round or no client (e.g. model initialisation, partitioning).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _purpose_code(purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")


def derive_seed(root: int, round_: int, client: int, purpose: str) -> int:
    """A 63-bit seed unique to (root, round, client, purpose)."""
    entropy = [int(root) & 0xFFFFFFFF, int(round_) + 1, int(client) + 1, _purpose_code(purpose)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def torch_generator(root: int, round_: int, client: int, purpose: str, device: str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(root, round_, client, purpose))
    return gen


def numpy_generator(root: int, round_: int, client: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(root, round_, client, purpose))
