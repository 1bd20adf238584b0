"""Poisson client sampling for client-level DP (McMahan et al., ICLR 2018, step 1): every client joins a round
independently with probability q = join_ratio, so the cohort size varies around qN (it may be empty). It plugs
into the pipeline's cohort-sampler hook (``UploadPipeline.cohort_sampler``), which ``rounds.sample_cohort``
calls; fixed-size sampling is the round's default sampler."""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.seeding import numpy_generator


@dataclass(frozen=True)
class PoissonSampler:
    """``(num_clients, size, seed, round) -> cohort``: each client with probability size / num_clients."""

    def __call__(self, num_clients: int, size: int, seed: int, round_: int) -> list[int]:
        rate = size / num_clients
        rng = numpy_generator(seed, round_, -1, "client-sampling:poisson")
        return [int(c) for c in (rng.random(num_clients) < rate).nonzero()[0]]
