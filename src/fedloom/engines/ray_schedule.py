"""Heterogeneity-aware scheduling of a round's clients over the Ray engine's workers, after FedML Parrot
(Tang et al., "FedML Parrot: A Scalable Federated Learning System via Heterogeneity-aware Scheduling on
Sequential and Hierarchical Training", arXiv 2303.01778, 2023): each worker trains its clients one after
another, the clients of a round are assigned from an estimate of each client's workload so that the workers
finish together, and the estimates are profiled online.

The cost model: client c on worker w takes ``work[c] · factor[c] · speed[w]`` seconds, where ``work`` is
samples × local epochs (the estimate before any measurement: factor 1, speed 1), ``speed[w]`` the worker's
measured seconds per unit of work and ``factor[c]`` how much slower than that the client trains (a bigger
batch count, another architecture). Both are updated after every round from the times the workers report.
The assignment is greedy earliest-finish-time over the clients heaviest first (LPT generalised to workers of
different speeds), which minimises the round's makespan within 4/3 of the optimum on identical workers.

Placement never changes a result: every random draw of a client comes from (seed, round, client, purpose) and
the ordered reduction adds the uploads in the cohort's order wherever they were trained (see ray_engine), so only
the round's time depends on the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

#: Weight of the newest measurement in the running estimates (exponential moving average).
SMOOTHING = 0.5


@dataclass
class CostModel:
    """Online estimates of per-client and per-worker training time (Parrot's workload profiler)."""

    work: list[float]  # samples × local epochs, per client
    speed: dict[int, float] = field(default_factory=dict)  # worker → seconds per unit of work
    factor: dict[int, float] = field(default_factory=dict)  # client → its time relative to its worker's speed

    def cost(self, client: int, worker: int) -> float:
        """Estimated seconds of ``client`` on ``worker`` (samples × epochs before the first measurement)."""
        return self.work[client] * self.factor.get(client, 1.0) * self.speed.get(worker, self.mean_speed())

    def mean_speed(self) -> float:
        return sum(self.speed.values()) / len(self.speed) if self.speed else 1.0

    def observe(self, worker: int, seconds: dict[int, float]) -> None:
        """A worker's measured training seconds per client of one round."""
        work = sum(self.work[c] for c in seconds)
        if work <= 0 or not seconds:
            return
        measured = sum(seconds.values()) / work
        old = self.speed.get(worker)
        speed = measured if old is None else (1 - SMOOTHING) * old + SMOOTHING * measured
        self.speed[worker] = speed
        for client, taken in seconds.items():
            if self.work[client] <= 0 or speed <= 0:
                continue
            ratio = taken / (self.work[client] * speed)
            previous = self.factor.get(client)
            self.factor[client] = ratio if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * ratio


def schedule(cohort: Iterable[int], workers: list[int], model: CostModel,
             pinned: Optional[dict[int, int]] = None) -> dict[int, list[int]]:
    """Clients of ``cohort`` → workers, minimising the estimated makespan: ``pinned`` clients (whose state lives
    on a worker) stay there and load it first; the others go, heaviest first, to the worker where they would
    finish earliest (ties: the lower worker index). Each worker's clients come back in client-id order."""
    pinned = pinned or {}
    loads = {w: 0.0 for w in workers}
    shares: dict[int, list[int]] = {w: [] for w in workers}
    free = []
    for client in cohort:
        home = pinned.get(client)
        if home in loads:
            loads[home] += model.cost(client, home)
            shares[home].append(client)
        else:
            free.append(client)
    for client in sorted(free, key=lambda c: (-model.cost(c, workers[0]) if workers else 0.0, c)):
        target = min(workers, key=lambda w: (loads[w] + model.cost(client, w), w))
        loads[target] += model.cost(client, target)
        shares[target].append(client)
    return {w: sorted(clients) for w, clients in shares.items() if clients}


def schedule_in_order(cohort: list[int], workers: list[int], model: CostModel,
                      pinned: Optional[dict[int, int]] = None, iterations: int = 40) -> dict[int, list[int]]:
    """Like ``schedule``, but the free clients go in contiguous runs of the cohort's order: the first run to
    ``workers[0]``, the next to ``workers[1]``..., the run lengths chosen (binary search on the makespan) so
    that the largest estimated finish time is least. The ordered reduction then folds each run on its worker
    and passes the running sum on once per run, not once per client."""
    pinned = {c: w for c, w in (pinned or {}).items() if w in workers}
    base = {w: 0.0 for w in workers}
    for client in cohort:
        if client in pinned:
            base[pinned[client]] += model.cost(client, pinned[client])
    free = [c for c in cohort if c not in pinned]

    def fill(limit: float) -> Optional[list[int]]:
        owners, position = [], 0
        for w in workers:
            load = base[w]
            while position < len(free) and load + model.cost(free[position], w) <= limit:
                load += model.cost(free[position], w)
                owners.append(w)
                position += 1
        return owners if position == len(free) else None

    low = max(base.values(), default=0.0)
    high = low + sum(max(model.cost(c, w) for w in workers) for c in free)
    for _ in range(iterations if free else 0):
        middle = (low + high) / 2
        low, high = (low, middle) if fill(middle) is not None else (middle, high)
    owners = fill(high) or [workers[-1]] * len(free)  # high is always feasible; the fallback never runs
    placed = {**dict(zip(free, owners)), **pinned}
    shares: dict[int, list[int]] = {}
    for client in cohort:
        target = placed[client]
        shares.setdefault(target, []).append(client)
    return {w: sorted(clients) for w, clients in shares.items()}


def idle_fraction(busy: dict[int, float], workers: int) -> float:
    """The share of the round's worker time spent waiting for the slowest worker: Σ (makespan - busy_w) over
    ``workers`` workers (those without clients idle throughout) / (workers × makespan)."""
    makespan = max(busy.values(), default=0.0)
    if makespan <= 0 or workers <= 0:
        return 0.0
    return sum(makespan - b for b in busy.values()) / (workers * makespan) + (workers - len(busy)) / workers
