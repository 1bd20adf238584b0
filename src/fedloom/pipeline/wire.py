"""Wire forms: what would actually be sent, and how many bytes it takes.

A message is counted by the arrays of its encoded payload, never by the tree it decodes to: a top-k upload is
k indices and k values, an 8-bit quantized one is one byte per coordinate plus two scalars per tensor, and an
algorithm may hand the engine a :class:`Compact` message of its own (seed indices and scalars, for example)
whose bytes are those arrays alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

if TYPE_CHECKING:  # (importing fedloom.algorithms here would import the algorithms that import this module)
    from fedloom.algorithms.tree import Tree

#: An encoded message: named arrays. Float arrays may be encoded further by the next codec of a chain.
Payload = dict[str, torch.Tensor]


def payload_bytes(payload: Payload) -> int:
    return sum(int(a.numel() * a.element_size()) for a in payload.values())


def flatten(tree: Tree, prefix: str = "") -> Payload:
    """A tree as a flat payload ``{"a/b": tensor}`` (the dense wire form)."""
    if isinstance(tree, torch.Tensor):
        return {prefix or "value": tree}
    flat: Payload = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def unflatten(flat: Payload, like: Tree, prefix: str = "") -> Tree:
    """Inverse of :func:`flatten`, shaped like ``like``."""
    if isinstance(like, torch.Tensor):
        return flat[prefix or "value"]
    return {key: unflatten(flat, value, f"{prefix}/{key}" if prefix else str(key)) for key, value in like.items()}


@dataclass(frozen=True)
class Compact:
    """A message in a compact wire form declared by an algorithm (uploads or broadcast extras).

    ``arrays`` is exactly what would be sent; ``decode(arrays)`` rebuilds the tree the receiver works with.
    FedKSeed's upload, for instance, is ``{"seeds": int16[k], "grads": float32[k]}`` decoding to the replayed
    update. Engines count ``payload_bytes(arrays)`` and hand the server ``decode(arrays)``.
    """

    arrays: Payload
    decode_fn: Callable[[Payload], Tree]

    def nbytes(self) -> int:
        return payload_bytes(self.arrays)

    def decode(self) -> Tree:
        return self.decode_fn(self.arrays)


def message_bytes(message: Optional[Any]) -> int:
    """Bytes of a message on the wire: a Compact's arrays, else the dense tree."""
    if isinstance(message, Compact):
        return message.nbytes()
    from fedloom.algorithms.tree import tree_bytes  # see the TYPE_CHECKING import above

    return tree_bytes(message)


def decoded(message: Optional[Any]) -> Optional[Tree]:
    """The tree a receiver works with."""
    return message.decode() if isinstance(message, Compact) else message
