"""InfoBatch (Qin, Wang, Zheng, Gu, Peng, Xu, Zhou, Shang, Sun, Xie, You, "InfoBatch: Lossless Training Speed Up
by Unbiased Dynamic Data Pruning", ICLR 2024) as an option of local training for every algorithm:
``--infobatch.prune-ratio r --infobatch.delta δ``.

Each client keeps a score per training sample, its most recent loss (client state, across rounds; every score
starts equal, so nothing is pruned in a client's first epoch). At the start of each of the client's local epochs,
while fewer than δ of its planned local epochs are done: the samples scoring below the mean score are the
well-learned set D1; a random ⌊(1−r)|D1|⌋ of them are kept with loss weight 1/(1−r), the rest of D1 is skipped
this epoch, and every other sample is kept with weight 1, so the expected epoch gradient equals the full one.
After δ of the planned epochs: the full data with weight 1 (the annealing). Visited samples' scores are set to
their (unweighted) loss after each forward; skipped ones keep their old score.

A client's planned local epochs are ``--local-epochs`` × its expected participations (rounds × cohort size /
clients); every ``local_sgd`` call over the client's own training set counts its epochs (a method with two
local passes per round, like Ditto, reaches the annealing sooner). Calls over other index arrays are not pruned.
The counts of sample forward/backward passes done and skipped are reported per client, per round
(``sample_passes``, ``sample_passes_saved``) and in the summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.engines.local_training import LOCAL_TRAINING


@LOCAL_TRAINING.register("infobatch")
@dataclass(frozen=True)
class InfoBatch:
    """InfoBatch's options (Qin et al., ICLR 2024): the prune ratio r of the well-learned samples and δ."""

    prune_ratio: float = hp(0.5, ge=0, le=0.9, help="r: fraction of the below-mean-loss samples skipped each epoch "
                                                    "(the official code keeps at least 10%: r <= 0.9)")
    delta: float = hp(0.875, gt=0, le=1, help="δ: prune during the first δ of the client's planned local epochs, "
                                              "then train on full data (annealing)")

    def schedule(self, rounds: int, join_ratio: float, num_clients: int, local_epochs: int) -> "InfoBatchSchedule":
        cohort = max(1, int(join_ratio * num_clients + 1e-9))  # as rounds.sample_cohort sizes it
        participations = max(1, math.ceil(rounds * cohort / num_clients))
        return InfoBatchSchedule(self.prune_ratio, self.delta, local_epochs * participations)


@dataclass(frozen=True)
class InfoBatchSchedule:
    """The run's InfoBatch: options plus each client's planned local epochs."""

    prune_ratio: float
    delta: float
    planned_epochs: int

    def init_state(self, num_samples: int) -> Tree:
        return {"scores": torch.ones(num_samples), "epochs": torch.zeros((), dtype=torch.int64)}

    def plan(self, state: Optional[Tree], indices: torch.Tensor, generator: torch.Generator) -> "EpochPlan":
        state = self.init_state(int(indices.shape[0])) if state is None else state
        return EpochPlan(self, indices, state["scores"].detach().float().cpu().clone(), int(state["epochs"]),
                         generator)


@dataclass
class EpochPlan:
    """One client's InfoBatch during one ``local_sgd`` call: which samples each epoch visits, with which weight."""

    schedule: InfoBatchSchedule
    indices: torch.Tensor  # the client's training sample ids (positions index this and the scores)
    scores: torch.Tensor
    epochs: int  # local epochs this client has done before this one
    generator: torch.Generator  # the (seed, round, client, "infobatch") stream: which D1 samples are kept
    passes: int = 0
    saved: int = 0
    pruned_epochs: int = field(default=0)

    def pruning(self) -> bool:
        return self.epochs < self.schedule.delta * self.schedule.planned_epochs

    def next_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions of the samples visited this epoch, their loss weights), before shuffling."""
        n = int(self.scores.shape[0])
        positions, weights = torch.arange(n), torch.ones(n)
        if self.pruning():
            positions, weights = self._soft_prune(n)
            self.pruned_epochs += 1
        self.epochs += 1
        self.passes += int(positions.shape[0])
        self.saved += n - int(positions.shape[0])
        return positions, weights

    def _soft_prune(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.schedule.prune_ratio
        well = torch.nonzero(self.scores < self.scores.mean()).flatten()  # D1: strictly below the mean score
        keep = well[torch.randperm(well.shape[0], generator=self.generator)[: int(well.shape[0] * (1 - r))]]
        visited = torch.ones(n, dtype=torch.bool)
        visited[well] = False
        visited[keep] = True
        weights = torch.ones(n)
        weights[keep] = 1.0 / (1.0 - r)  # the kept well-learned samples stand in for the skipped ones
        positions = torch.nonzero(visited).flatten()
        return positions, weights[positions]

    def epoch_batches(self, batch_size: int, generator: torch.Generator
                      ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch as shuffled (sample ids, positions, weights) minibatches, DataLoader-like."""
        positions, weights = self.next_epoch()
        order = torch.randperm(positions.shape[0], generator=generator)
        positions, weights = positions[order], weights[order]
        return [(self.indices[p], p, w) for p, w in zip(positions.split(batch_size), weights.split(batch_size))]

    def record(self, positions: torch.Tensor, losses: torch.Tensor) -> None:
        """The visited samples' new scores: their unweighted losses."""
        self.scores[positions.cpu()] = losses.detach().float().cpu()

    def state(self) -> Tree:
        return {"scores": self.scores.clone(), "epochs": torch.tensor(self.epochs, dtype=torch.int64)}

    def metrics(self) -> dict[str, float]:
        return {"sample_passes": float(self.passes), "sample_passes_saved": float(self.saved)}


def build_local_training(options: dict[str, Any], rounds: int, join_ratio: float, num_clients: int,
                         local_epochs: int) -> Optional[InfoBatchSchedule]:
    """The run's local-training schedule from its option tables (None when no local-training table is given)."""
    from fedloom.config import make_component
    from fedloom.engines.local_training import selected_local_training

    names = selected_local_training(options)
    if not names:
        return None
    component = make_component(LOCAL_TRAINING, names[0], dict(options[names[0]]))
    return component.schedule(rounds, join_ratio, num_clients, local_epochs)
