"""The serial engine: one client after another in this process. It is the reference the faster engines are
tested against."""

from __future__ import annotations

from typing import Iterator, Optional

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Params, Tree, tree_bytes
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.engines.base import ENGINES, CohortResult, Engine
from fedloom.engines.evaluation import evaluate_stream


@ENGINES.register("serial")
class SerialEngine(Engine):
    def _load_state(self, algorithm: Algorithm, client_id: int) -> Optional[Tree]:
        state = self.runtime.store.load(client_id)
        if state is None:
            state = algorithm.init_client_state(self.runtime.init_params)
        return state

    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        accumulator = UploadAccumulator(keep_all=algorithm.aggregation == "all")
        client_metrics: dict[int, dict[str, float]] = {}
        bytes_up = 0
        for client_id in cohort:
            ctx = self.runtime.client_context(client_id, round_)
            result = algorithm.client_update(ctx, broadcast.for_client(client_id),
                                             self._load_state(algorithm, client_id))
            self.runtime.store.save(client_id, result.state)
            accumulator.add(client_id, result.upload, result.weight)
            bytes_up += tree_bytes(result.upload)
            client_metrics[client_id] = result.metrics
        return CohortResult(accumulator.finish(), client_metrics, bytes_up)

    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        def eval_params() -> Iterator[tuple[int, Params]]:
            for client_id in clients:
                ctx = self.runtime.client_context(client_id, round_)
                yield client_id, algorithm.eval_params(ctx, broadcast.for_client(client_id),
                                                       self._load_state(algorithm, client_id))

        return evaluate_stream(self.runtime, eval_params(), broadcast.params, split)
