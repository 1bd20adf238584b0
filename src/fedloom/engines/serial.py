"""The serial engine: one client after another in this process. It is the reference the faster engines are
tested against."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Params, Tree
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.engines.base import ENGINE_OPTIONS, ENGINES, CohortResult, Engine
from fedloom.engines.evaluation import evaluate_stream
from fedloom.engines.local_training import join_training, split_training


# the serial engine takes no options (registered so that every engine has an options table; no docstring:
# `fedloom list` shows the module's first line)
@ENGINE_OPTIONS.register("serial")
@dataclass(frozen=True)
class SerialOptions:
    pass


@ENGINES.register("serial")
class SerialEngine(Engine):
    def _load_state(self, algorithm: Algorithm, client_id: int) -> Optional[Tree]:
        state = self.runtime.uploads.split(self._stored(client_id)[0])[0]
        if state is None:
            state = algorithm.init_client_state(self.runtime.for_client(client_id).init_params, client_id)
        return state

    def _transform_states(self, client_id: int) -> dict[str, Any]:
        if not self.runtime.uploads.stateful:
            return {}
        return self.runtime.uploads.split(self._stored(client_id)[0])[1]

    def _stored(self, client_id: int) -> tuple[Optional[Tree], Optional[Tree]]:
        """(algorithm and transform states, the local-training seam's state) of a client."""
        return split_training(self.runtime.store.load(client_id))

    def training_state(self, client_id: int) -> Optional[Tree]:
        """The local-training seam's saved state of a client (InfoBatch's scores), None without one."""
        return self._stored(client_id)[1] if self.runtime.local_training is not None else None

    def finish_client(self, accumulator: UploadAccumulator, client_id: int, round_: int, upload: Any,
                      weight: Any, state: Optional[Tree], training: Optional[Tree] = None,
                      metrics: Optional[dict[str, float]] = None) -> int:
        """The per-client finishing step every engine shares: the upload pipeline (attack, transforms, wire
        encoding), the client's new state into the store, the decoded upload into the accumulator. Returns the
        upload's bytes on the wire; ``metrics`` (the client's) receives the bytes after each transform."""
        pipeline = self.runtime.uploads
        received, nbytes, transform_states = pipeline.finish(client_id, round_, upload,
                                                             self._transform_states(client_id), metrics)
        self.runtime.store.save(client_id, join_training(pipeline.join(state, transform_states), training))
        accumulator.add(client_id, received, pipeline.weight_of(weight))
        return nbytes

    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        accumulator = UploadAccumulator(keep_all=self.runtime.keep_all(algorithm))
        client_metrics, bytes_up, _ = self.train_into(accumulator, algorithm, broadcast, cohort, round_)
        return CohortResult(accumulator.finish(), client_metrics, bytes_up)

    def train_into(self, accumulator: Any, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                   round_: int) -> tuple[dict[int, dict[str, float]], int, dict[int, float]]:
        """Train ``cohort`` one client after another, each decoded upload added to ``accumulator`` (anything
        with UploadAccumulator's ``add``: the Ray engine passes one that holds the uploads for its ordered
        reduction). Returns the clients' metrics, the bytes uploaded and each client's seconds (the Ray
        engine's cost model measures clients this way, in one call rather than one call per client)."""
        client_metrics: dict[int, dict[str, float]] = {}
        seconds: dict[int, float] = {}
        bytes_up = 0
        for client_id in cohort:
            started = time.perf_counter()
            ctx = self.runtime.client_context(client_id, round_)
            ctx.training_state = self.training_state(client_id)
            result = algorithm.client_update(ctx, broadcast.for_client(client_id),
                                             self._load_state(algorithm, client_id))
            client_metrics[client_id] = {**result.metrics, **ctx.training_metrics}
            bytes_up += self.finish_client(accumulator, client_id, round_, result.upload, result.weight,
                                           result.state, ctx.training_state, client_metrics[client_id])
            seconds[client_id] = time.perf_counter() - started
        return client_metrics, bytes_up, seconds

    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        def eval_params() -> Iterator[tuple[int, Params]]:
            for client_id in clients:
                ctx = self.runtime.client_context(client_id, round_)
                yield client_id, algorithm.eval_params(ctx, broadcast.for_client(client_id),
                                                       self._load_state(algorithm, client_id))

        return evaluate_stream(self.runtime, eval_params(), broadcast.params, split)
