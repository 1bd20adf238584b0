"""UploadPipeline: the one per-client finishing step every engine calls after ``client_update``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_bytes
from fedloom.pipeline.attacks import POISONED_SPLIT, Attack, BatchPoison, PoisonContext, PoisonedTestView
from fedloom.pipeline.context import TransformContext
from fedloom.pipeline.transforms import Clip, UploadTransform
from fedloom.pipeline.wire import Compact, decoded, flatten, message_bytes, payload_bytes, unflatten

#: Keys of a stored client state when transforms keep state of their own beside the algorithm's.
ALGORITHM_KEY, TRANSFORMS_KEY = "__algorithm__", "__transforms__"


@dataclass(frozen=True)
class UploadPipeline:
    """Attack (for malicious clients) → transforms in order → wire encoding (bytes) → decoding. It also holds
    the threat model's other hooks: the cohort sampler, a malicious client's batch poison, the poisoned test
    view (engines and rounds call these by their generic names and never look at the attack itself)."""

    seed: int = 0
    transforms: tuple[tuple[str, UploadTransform], ...] = ()
    attack: Optional[Attack] = None
    malicious: frozenset[int] = field(default_factory=frozenset)
    #: ``(num_clients, size, seed, round) -> cohort`` when the threat model fixes the attackers per round
    cohort_sampler: Optional[Callable[[int, int, int, int], list[int]]] = None
    _poisons: dict[int, Optional[BatchPoison]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return not self.transforms and self.attack is None

    @property
    def stateful(self) -> bool:
        return any(t.stateful for _, t in self.transforms)

    @property
    def clip_norm(self) -> float:
        clips = [t.norm for _, t in self.transforms if isinstance(t, Clip)]
        return clips[-1] if clips else 0.0

    def weight_of(self, weight: Any) -> Any:
        """The weight the server gives an upload: the algorithm's, or 1 when a transform needs every client to
        count once (client-level DP: the sum's sensitivity is then the clipping bound)."""
        return 1.0 if any(t.uniform_weights for _, t in self.transforms) else weight

    # ------------------------------------------------------------------ the threat model's hooks
    def poison_for(self, client_id: int, train_indices: torch.Tensor, num_classes: int,
                   input_shape: tuple[int, ...]) -> Optional[BatchPoison]:
        """The batch transform of a malicious client under a data-level attack (None for everyone else); built
        once per client (its poisoned samples are fixed for the run)."""
        if self.attack is None or client_id not in self.malicious:
            return None
        if client_id not in self._poisons:
            rank = sorted(self.malicious).index(client_id)
            pctx = PoisonContext(self.seed, client_id, rank, train_indices, num_classes, tuple(input_shape))
            self._poisons[client_id] = self.attack.poisoner(pctx)
        return self._poisons[client_id]

    def eval_view(self, split: str) -> Optional[PoisonedTestView]:
        """How an evaluation split's samples are changed: the attack's poisoned test view for the poisoned split,
        None (the samples as they are) for the others."""
        if split != POISONED_SPLIT or self.attack is None:
            return None
        return self.attack.test_view()

    # ------------------------------------------------------------------ client state
    def split(self, stored: Optional[Tree]) -> tuple[Optional[Tree], dict[str, Any]]:
        """(algorithm state, transform states) of what the store holds for a client."""
        if not self.stateful or stored is None:
            return stored, {}
        return stored.get(ALGORITHM_KEY), dict(stored.get(TRANSFORMS_KEY, {}))

    def join(self, state: Optional[Tree], transform_states: dict[str, Any]) -> Optional[Tree]:
        """What the store keeps: the algorithm's state alone, unless transforms keep state too."""
        if not self.stateful:
            return state
        stored: dict[str, Any] = {} if state is None else {ALGORITHM_KEY: state}
        kept = {k: v for k, v in transform_states.items() if v is not None}
        if kept:
            stored[TRANSFORMS_KEY] = kept
        return stored or None

    # ------------------------------------------------------------------ the finishing step
    def finish(self, client_id: int, round_: int, upload: Any, transform_states: dict[str, Any],
               stage_bytes: Optional[dict[str, float]] = None) -> tuple[Optional[Tree], int, dict[str, Any]]:
        """(the upload the server receives, its bytes on the wire, the new transform states). ``stage_bytes``,
        when given, receives ``bytes_up_after_<transform>`` for every transform: the size the message would have
        if the chain stopped there (dense until the first codec, then each codec's encoded payload)."""
        if upload is None:
            return None, 0, transform_states
        if self.empty:
            return decoded(upload), message_bytes(upload), transform_states
        tctx = TransformContext(self.seed, round_, client_id, client_id in self.malicious, self.clip_norm)
        states = dict(transform_states)
        upload, done = self.on_compact(tctx, upload, states)
        tree = decoded(upload)
        if tctx.malicious and self.attack is not None:
            tree = self.attack.corrupt(tctx, tree)
        for name, transform in self.transforms[done:]:
            tree, states[name] = transform.apply(tctx, tree, states.get(name))
        dense = message_bytes(upload) if isinstance(upload, Compact) else tree_bytes(tree)
        codecs = [t for _, t in self.transforms if t.has_codec]
        if not codecs:
            received, nbytes, encoded = tree, dense, []
        else:
            received, nbytes, encoded = self._through_the_wire(tree, codecs, tctx)
        if stage_bytes is not None:
            stage_bytes.update(self._stage_sizes(dense, encoded))
        return received, nbytes, states

    def on_compact(self, tctx: TransformContext, upload: Any, states: dict[str, Any]) -> tuple[Any, int]:
        """(the upload, how many transforms already acted on it): the transforms before the first codec act on
        the float arrays of an algorithm's ``Compact`` upload, so that it stays compact (FedKSeed: clip and
        noise on the scalars ĝ, as DPZero does; the seed indices are untouched). ``states`` is updated in place.
        A malicious client's attack works on the decoded upload, so its transforms do too."""
        if not isinstance(upload, Compact) or (tctx.malicious and self.attack is not None):
            return upload, 0
        arrays, done = dict(upload.arrays), 0
        for name, transform in self.transforms:
            if transform.has_codec:
                break
            floats = {key: value for key, value in arrays.items() if value.is_floating_point()}
            floats, states[name] = transform.apply(tctx, floats, states.get(name))
            arrays.update(floats)
            done += 1
        return Compact(arrays, upload.decode_fn), done

    def _stage_sizes(self, dense: int, encoded: list[int]) -> dict[str, float]:
        """Bytes after each transform: codecs encode in chain order, so the k-th codec's size holds from its
        stage until the next codec's."""
        sizes, size, codec_index = {}, dense, 0
        for name, transform in self.transforms:
            if transform.has_codec:
                size, codec_index = encoded[codec_index], codec_index + 1
            sizes[f"bytes_up_after_{name}"] = float(size)
        return sizes

    @staticmethod
    def _through_the_wire(tree: Tree, codecs: list[UploadTransform],
                          tctx: TransformContext) -> tuple[Tree, int, list[int]]:
        """(the decoded upload, its bytes on the wire, the payload's size after each codec)."""
        payload, sizes = flatten(tree), []
        for codec in codecs:
            payload = codec.encode(payload, tctx)
            sizes.append(payload_bytes(payload))
        for codec in reversed(codecs):
            payload = codec.decode(payload)
        return unflatten(payload, tree), sizes[-1], sizes
