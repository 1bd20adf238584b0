"""The vectorized engine: a cohort's client updates run as packs of clients in lockstep (torch.func).

The same algorithm file runs unchanged: ``client_update`` and ``eval_params`` receive a PackContext and
client-stacked state instead of one client's. Results equal the serial engine's up to float32 rounding (each
client sees the same batches from the same streams). Algorithms declaring ``vectorizable = False``, or using
something a pack cannot batch (NotVectorizable), run serially with a one-line warning; so do cohorts smaller
than ``min_clients``, where a plain loop is faster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from fedloom.algorithms.base import Algorithm, Broadcast, ClientResult, Predictor
from fedloom.algorithms.tree import Params, Tree, tree_bytes, tree_index, tree_stack
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.engines.base import ENGINE_OPTIONS, ENGINES, CohortResult, EngineOptions
from fedloom.engines.context import Runtime
from fedloom.engines.evaluation import evaluate_stream
from fedloom.engines.local_training import join_training
from fedloom.engines.options import engine_option
from fedloom.engines.pack_context import NotVectorizable, PackContext, PerClient
from fedloom.engines.pack_sgd import SlotUsage
from fedloom.engines.serial import SerialEngine

log = logging.getLogger(__name__)


# the vectorized engine's options: --vectorized.<option> or a [vectorized] table (no docstring: `fedloom list`
# shows the module's first line)
@ENGINE_OPTIONS.register("vectorized")
@dataclass(frozen=True)
class VectorizedOptions:
    pack_size: int = engine_option(32, "pack_size", "clients trained in lockstep (slots)", ge=1)


def client_upload(upload: Any, position: int) -> Any:
    """One client's upload out of a pack's: a slice of the stacked tree, or its own value of a PerClient."""
    if upload is None:
        return None
    return upload[position] if isinstance(upload, PerClient) else tree_index(upload, position)


def normalises_over_batch(runtime: Runtime) -> bool:
    """Whether a client model's output for one sample depends on the rest of its batch (BatchNorm with batch
    statistics: cnn-bn, the model families' ResNets...): a pack's zero-weight padding would change it."""
    models = runtime.architectures.models if runtime.architectures is not None else (runtime.model,)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for model in models for m in model.modules())


@ENGINES.register("vectorized")
class VectorizedEngine(SerialEngine):
    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        super().__init__(runtime, options)
        self.serial_reason: Optional[str] = None
        self.usage = SlotUsage()

    # ------------------------------------------------------------------ training
    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        if not self._vectorize(algorithm, cohort):
            return super().train_cohort(algorithm, broadcast, cohort, round_)
        try:
            packs = [self._train_pack(algorithm, broadcast, pack, round_) for pack in self._packs(cohort)]
        except NotVectorizable as exc:
            self._fall_back(algorithm, str(exc))
            return super().train_cohort(algorithm, broadcast, cohort, round_)
        accumulator = UploadAccumulator(keep_all=self.runtime.keep_all(algorithm))
        metrics: dict[int, dict[str, float]] = {}
        bytes_up = 0
        stage_bytes: dict[int, dict[str, float]] = {}
        for pack, ctx, result in packs:  # commit only after every pack succeeded (no partial side effects)
            per_client = isinstance(result.upload, PerClient)  # uploads that cannot be stacked (ctx.each_client)
            upload = result.upload if per_client else ctx.ensure_stacked(result.upload)
            state = ctx.ensure_stacked(result.state)
            weights = torch.as_tensor(result.weight, dtype=torch.float64).expand(len(pack))
            if self.runtime.uploads.empty and not per_client:  # the fast path: one reduction for the whole pack
                accumulator.add_stacked(pack, upload, weights)
                for position, client_id in enumerate(pack):
                    self.runtime.store.save(client_id, join_training(
                        None if state is None else tree_index(state, position), ctx.training_states.get(client_id)))
                if upload is not None:
                    bytes_up += len(pack) * tree_bytes(tree_index(upload, 0))
            else:  # transforms act per client, exactly as on the serial engine
                for position, client_id in enumerate(pack):
                    bytes_up += self.finish_client(
                        accumulator, client_id, round_, client_upload(upload, position),
                        float(weights[position]), None if state is None else tree_index(state, position),
                        ctx.training_states.get(client_id), stage_bytes.setdefault(client_id, {}))
            for position, client_id in enumerate(pack):
                metrics[client_id] = {k: float(torch.as_tensor(v).reshape(-1)[position] if torch.as_tensor(
                    v).numel() > 1 else v) for k, v in result.metrics.items()}
                metrics[client_id].update(ctx.training_metrics.get(client_id, {}))
                metrics[client_id].update(stage_bytes.get(client_id, {}))
        return CohortResult(accumulator.finish(), metrics, bytes_up)

    def _train_pack(self, algorithm: Algorithm, broadcast: Broadcast, pack: list[int],
                    round_: int) -> tuple[list[int], PackContext, ClientResult]:
        ctx = self._pack_context(pack, round_, broadcast)
        ctx.training_states = {client_id: self.training_state(client_id) for client_id in pack}
        result = algorithm.client_update(ctx, self._pack_broadcast(algorithm, broadcast, pack),
                                         self._pack_state(algorithm, pack))
        return pack, ctx, result

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        if not self._vectorize(algorithm, clients):
            return super().evaluate(algorithm, broadcast, clients, round_, split)
        try:
            return evaluate_stream(self.runtime, self._eval_items(algorithm, broadcast, clients, round_),
                                   broadcast.params, split)
        except NotVectorizable as exc:
            self._fall_back(algorithm, str(exc))
            return super().evaluate(algorithm, broadcast, clients, round_, split)

    def _eval_items(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int],
                    round_: int) -> Iterator[tuple[int, Params]]:
        for pack in self._packs(clients):
            ctx = self._pack_context(pack, round_, broadcast)
            params = algorithm.eval_params(ctx, self._pack_broadcast(algorithm, broadcast, pack),
                                           self._pack_state(algorithm, pack))
            if params is broadcast.params:
                yield from ((client_id, params) for client_id in pack)
            elif isinstance(params, Predictor):
                # a Predictor's tree is the algorithm's own layout: nothing tells its per-client leaves from
                # shared ones (a [C, D] table in a pack of C clients), so its clients are asked one at a time
                yield from self._client_eval_items(algorithm, broadcast, pack, round_)
            else:
                stacked = ctx.ensure_stacked(params)
                yield from ((client_id, tree_index(stacked, i)) for i, client_id in enumerate(pack))

    def _client_eval_items(self, algorithm: Algorithm, broadcast: Broadcast, pack: list[int],
                           round_: int) -> Iterator[tuple[int, Predictor]]:
        """A pack's clients' Predictors asked for one client at a time, as the serial engine asks (cheap:
        ``eval_params`` only assembles tensors; the scoring itself is per client on every engine)."""
        for client_id in pack:
            ctx = self.runtime.client_context(client_id, round_)
            yield client_id, algorithm.eval_params(ctx, broadcast.for_client(client_id),
                                                   self._load_state(algorithm, client_id))

    # ------------------------------------------------------------------ helpers
    def _vectorize(self, algorithm: Algorithm, clients: list[int]) -> bool:
        if not algorithm.vectorizable:
            self._fall_back(algorithm, "the algorithm declares vectorizable = False")
        if normalises_over_batch(self.runtime):
            self._fall_back(algorithm, "the model normalises over the batch (BatchNorm with batch statistics), and "
                                       "a pack pads partial batches, which would change those statistics")
        return self.serial_reason is None and len(clients) >= self.options.min_clients

    def _fall_back(self, algorithm: Algorithm, reason: str) -> None:
        if self.serial_reason is None:
            self.serial_reason = reason
            log.warning("vectorized engine: running %s serially (%s)", type(algorithm).__name__, reason)

    def _packs(self, clients: list[int]) -> Iterator[list[int]]:
        """Packs of at most ``pack_clients`` clients, each of one architecture (a pack stacks parameters)."""
        size = self.options.pack_clients
        by_arch: dict[int, list[int]] = {}
        for client_id in clients:
            by_arch.setdefault(self.runtime.arch_of(client_id), []).append(client_id)
        for group in by_arch.values():
            for start in range(0, len(group), size):
                yield group[start:start + size]

    def _pack_context(self, pack: list[int], round_: int, broadcast: Broadcast) -> PackContext:
        ctx = PackContext(self.runtime.for_client(pack[0]), pack, round_, self.options.slots, self.usage)
        ctx.shared_params = broadcast.params  # what tells a per-client copy of a non-model entry from the shared one
        return ctx

    def _pack_state(self, algorithm: Algorithm, pack: list[int]) -> Optional[Tree]:
        states = [self._load_state(algorithm, client_id) for client_id in pack]
        if all(state is None for state in states):
            return None
        if any(state is None for state in states):
            raise NotVectorizable("some clients of a pack have no state")
        return tree_stack(states)

    @staticmethod
    def _pack_broadcast(algorithm: Algorithm, broadcast: Broadcast, pack: list[int]) -> Broadcast:
        if broadcast.personal is None:
            return broadcast
        if algorithm.personal_recomputable:  # a cache the clients rebuild from the shared part (VHL's data)
            return Broadcast(broadcast.params, broadcast.extra, None, broadcast.wire)
        personal = [broadcast.personal.get(client_id) for client_id in pack]
        if any(p is None for p in personal):
            raise NotVectorizable("personal broadcast missing for some clients of a pack")
        return Broadcast(broadcast.params, broadcast.extra, tree_stack(personal), broadcast.wire)
