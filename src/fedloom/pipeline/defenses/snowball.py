"""Snowball (Qin, Chen, Zhi, Yan, Deng, "Resisting Backdoor Attacks in Federated Learning via Bidirectional
Elections and Individual Perspective", AAAI 2024, arXiv 2309.16456; official code zhenqincn/Snowball) and its
ablation Snowball⊟ (bottom-up election only)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, generator_or_default, report_admitted, weighted_mean
from fedloom.pipeline.defenses.vae import DifferenceVAE, reconstruction_error, train_vae


def election_layers(tree: Tree, spec: str) -> list[str]:
    """Names of the tensors the elections look at. ``spec`` is a comma list: ``first`` / ``last`` name every
    tensor of the model's first / last layer (its module prefix, in the upload's own order), any other token
    every tensor whose name contains it (the official code's 'conv1', 'fc2')."""
    names = list(_insertion_order(tree))
    prefix = [name.rsplit(".", 1)[0] for name in names]
    chosen: list[str] = []
    for token in (part.strip() for part in spec.split(",")):
        if token == "first":
            chosen += [n for n, p in zip(names, prefix) if p == prefix[0]]
        elif token == "last":
            chosen += [n for n, p in zip(names, prefix) if p == prefix[-1]]
        else:
            chosen += [n for n in names if token in n]
    ordered = [n for n in names if n in set(chosen)]
    if not ordered:
        raise ConfigError(f"snowball.layers = {spec!r} names no tensor of the uploads ({', '.join(names[:6])} ...)")
    return ordered


def _insertion_order(tree: Tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    out: dict[str, torch.Tensor] = {}
    for key, sub in tree.items():
        out.update(_insertion_order(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def layer_matrix(items: Items, name: str) -> np.ndarray:
    return np.stack([_insertion_order(tree)[name].reshape(-1).double().cpu().numpy() for _, tree, _ in items])


def vote_one_layer(points: np.ndarray, clusters_far: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every candidate i's view of one layer: K-means (ct + 1 clusters, one pass, seeded with i's own position
    0 and its ct farthest differences) on d_ij = x_i − x_j; i votes for the members of its own cluster, with the
    Calinski–Harabasz score of that clustering as its weight. Returns (scores, members per voter)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score

    n = points.shape[0]
    scores, members = np.zeros(n), []
    for i in range(n):
        differences = points[i] - points
        far = np.argsort(np.linalg.norm(differences, axis=1), kind="stable")[n - clusters_far:]
        seeds = differences[np.concatenate(([i], far))]
        labels = KMeans(n_clusters=len(seeds), init=seeds, n_init=1, random_state=seed).fit_predict(differences)
        distinct = len(set(labels.tolist()))
        scores[i] = calinski_harabasz_score(differences, labels) if 2 <= distinct <= n - 1 else 0.0
        members.append(np.flatnonzero(labels == labels[i]))
    return scores, members


def bottom_up(items: Items, layers: list[str], clusters_far: int, share: float, seed: int) -> list[int]:
    """The bottom-up election: per layer, voters with CH > 0 (or the ⌊share·n⌋ best if fewer qualify) give
    their min-max normalised CH score to every member of their cluster; the ⌈share·n⌉ candidates with the most
    votes summed over layers are elected (positions, best first)."""
    n = len(items)
    votes = np.zeros(n)
    for name in layers:
        scores, members = vote_one_layer(layer_matrix(items, name), clusters_far, seed)
        voters = np.flatnonzero(scores > 0)
        if len(voters) < int(n * share):
            voters = np.argsort(-scores, kind="stable")[:int(n * share)]
        spread = scores.max() - scores.min()
        weights = (scores - scores.min()) / spread if spread > 0 else np.ones(n)
        for voter in voters:
            votes[members[voter]] += weights[voter]
    return [int(p) for p in np.argsort(-votes, kind="stable")[:math.ceil(n * share)]]


def pairwise_differences(rows: torch.Tensor) -> torch.Tensor:
    """x_i − x_j for every ordered pair i ≠ j."""
    n = rows.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    mask = i != j
    return rows[i[mask]] - rows[j[mask]]


@AGGREGATORS.register("snowball-minus")
@dataclass(frozen=True)
class SnowballMinus(Aggregator):
    """Snowball⊟, the paper's ablation (the official ``snowball_minus.py``): the bottom-up election alone, every
    round; the ⌈share·n⌉ elected uploads are averaged with their sample weights.

    Bottom-up election (Qin et al., AAAI 2024), per election layer (``layers``: the first and the last layer by
    default, the official 'conv1' and 'fc2'): every candidate clusters its differences to all others with
    K-means (``ct`` + 1 clusters, seeded at itself and its ``ct`` farthest peers), votes for its own cluster's
    members with the clustering's Calinski–Harabasz score (min-max normalised over voters), and the most-voted
    ⌈share·n⌉ are elected. Needs n ≥ ct + 2 uploads a round."""

    ct: int = hp(10, ge=1, help="far peers seeding K-means (ct + 1 clusters)")
    share: float = hp(0.1, gt=0, le=1, help="share of the cohort elected bottom-up")
    layers: str = hp("first,last", help="election layers: first, last, or name substrings, comma-separated")

    def check_cohort(self, size: int) -> None:
        if size < self.ct + 2:
            raise ConfigError(f"{type(self).registry_name} with ct={self.ct} needs at least ct+2 = {self.ct + 2} "
                              f"uploads per round, but a round samples {size} clients; lower "
                              f"{type(self).registry_name}.ct or sample more clients")

    def elect_bottom_up(self, items: Items, ctx: Optional[AggregationContext]) -> list[int]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator_or_default(ctx, "snowball-kmeans")))
        return bottom_up(items, election_layers(items[0][1], self.layers), self.ct, self.share, seed)

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        elected = self.elect_bottom_up(items, ctx)
        report_admitted(ctx, items, elected)
        return weighted_mean(items, elected)


@AGGREGATORS.register("snowball")
@dataclass(frozen=True)
class Snowball(SnowballMinus):
    """Snowball (Qin et al., AAAI 2024): a bottom-up election by K-means votes, then a top-down election that
    grows the elected set by a VAE's reconstruction error.

    The bottom-up election (see snowball-minus) runs alone during the first ``warmup`` rounds (rounds < warmup; the
    official values: MNIST 25, Fashion-MNIST 30, FEMNIST 80, CIFAR-10 100, Sent140 30); after it the top-down
    election grows the elected set: a VAE (hidden S^H, latent S^L) is trained from scratch for E^VI epochs on the
    pairwise differences of the elected uploads' election layers (sigmoid-squashed), then, until ⌊M·n⌋ are elected:
    fine-tune E^VT epochs on the current elected set's differences, score every other candidate by its mean
    reconstruction error (``samples`` latent draws) over its differences ± to each elected upload, and elect the
    ⌈M^E·n⌉ lowest. The elected uploads are averaged with their sample weights. The VAE is retrained every round (as
    the official code does), so it keeps no memory."""

    warmup: int = hp(30, ge=0, help="rounds (< warmup) with the bottom-up election only")
    target_share: float = hp(0.5, gt=0, le=1, help="M: top-down election stops at ⌊M·n⌋ elected")
    step_share: float = hp(0.05, gt=0, le=1, help="M^E: share of the cohort elected per top-down step")
    vae_hidden: int = hp(256, ge=1, help="S^H, the VAE's hidden width")
    vae_latent: int = hp(64, ge=1, help="S^L, the VAE's latent width")
    vae_initial_epochs: int = hp(270, ge=0, help="E^VI, epochs of the VAE's initial training")
    vae_tuning_epochs: int = hp(30, ge=0, help="E^VT, epochs of fine-tuning per top-down step")
    vae_batch_size: int = hp(8, ge=1, help="VAE minibatch size")
    samples: int = hp(10, ge=1, help="L, latent draws per reconstruction error")
    vae_fused: bool = hp(False, help="train the VAE with PyTorch's fused Adam kernel: about 2x faster top-down "
                                     "elections on CPU (the optimizer's passes over the VAE's two input-sized "
                                     "layers dominate); the same algorithm with other float rounding, so "
                                     "near-tied candidates can be elected in another order")

    def check_cohort(self, size: int) -> None:
        super().check_cohort(size)
        if math.ceil(self.share * size) < 2 and int(self.target_share * size) > math.ceil(self.share * size):
            raise ConfigError(f"snowball's top-down election learns from differences between at least two "
                              f"bottom-up winners, but ceil(snowball.share·{size}) = "
                              f"{math.ceil(self.share * size)}; raise snowball.share or sample more clients")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        elected = self.elect_bottom_up(items, ctx)
        topdown = ctx is None or ctx.round >= self.warmup
        if topdown:
            elected = self.elect_top_down(items, elected, ctx)
        if ctx is not None:
            ctx.metrics["snowball_topdown"] = float(topdown)
        report_admitted(ctx, items, elected)
        return weighted_mean(items, elected)

    def elect_top_down(self, items: Items, elected: list[int], ctx: Optional[AggregationContext]) -> list[int]:
        n = len(items)
        names = election_layers(items[0][1], self.layers)
        rows = torch.from_numpy(np.concatenate([layer_matrix(items, name) for name in names], axis=1)).float()
        generator = generator_or_default(ctx, "snowball-vae")
        elected = list(elected)
        if len(elected) >= int(n * self.target_share) or len(elected) < 2:
            return elected
        vae = DifferenceVAE(rows.shape[1], self.vae_hidden, self.vae_latent, generator)
        train_vae(vae, pairwise_differences(rows[elected]), self.vae_initial_epochs, self.vae_batch_size, generator,
                  fused=self.vae_fused)
        while len(elected) < int(n * self.target_share):
            train_vae(vae, pairwise_differences(rows[elected]), self.vae_tuning_epochs, self.vae_batch_size,
                      generator, fused=self.vae_fused)
            rest = [p for p in range(n) if p not in elected]
            errors = torch.stack([self.candidate_error(vae, rows, elected, p, generator) for p in rest])
            take = min(math.ceil(n * self.step_share), int(n * self.target_share) - len(elected))
            elected += [rest[int(k)] for k in torch.argsort(errors, stable=True)[:take]]
        return elected

    def candidate_error(self, vae: DifferenceVAE, rows: torch.Tensor, elected: list[int], candidate: int,
                        generator: torch.Generator) -> torch.Tensor:
        """Mean reconstruction error of the candidate's differences to each elected upload, both signs (elected
        uploads identical to the candidate are skipped, as in the official code; none left: +inf)."""
        differences = rows[elected] - rows[candidate]
        differences = differences[differences.sum(dim=1) != 0]
        if differences.shape[0] == 0:
            return torch.tensor(float("inf"), dtype=torch.float64)
        both = torch.cat([differences, -differences])
        return reconstruction_error(vae, both, self.samples, generator).mean()
