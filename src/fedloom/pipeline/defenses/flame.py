"""FLAME (Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen, Mirhoseini, Zeitouni,
Koushanfar, Sadeghi, Schneider, "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022,
arXiv 2101.02281)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from fedloom.algorithms.tree import Tree, tree_zeros_like
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import (Items, add_noise, clip_factors, combine, flat, flat_matrix,
                                              generator_or_default, report_admitted)


def majority_cluster(distances: np.ndarray, min_cluster_size: int, min_samples: Optional[int],
                     largest: bool = True) -> list[int]:
    """Positions HDBSCAN (scikit-learn, on a precomputed distance matrix, one cluster allowed) puts in the
    largest cluster (``largest``), or in the cluster labelled 0 (the Snowball repo's choice); [] when every point
    is noise."""
    from sklearn.cluster import HDBSCAN

    clusterer = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed",
                        allow_single_cluster=True, copy=True)
    labels = clusterer.fit_predict(distances.astype(np.float64))
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return []
    target = int(np.bincount(clustered).argmax()) if largest else 0
    return [int(p) for p in np.flatnonzero(labels == target)]


def cosine_distances(points: torch.Tensor) -> np.ndarray:
    unit = points.double() / torch.linalg.vector_norm(points.double(), dim=1, keepdim=True).clamp_min(1e-30)
    return (1 - unit @ unit.T).clamp_min(0).fill_diagonal_(0).numpy()


@AGGREGATORS.register("flame")
@dataclass(frozen=True)
class Flame(Aggregator):
    """FLAME (Nguyen et al., USENIX Security 2022): HDBSCAN on cosine distances admits the majority cluster,
    which is clipped to the median norm and averaged, plus Gaussian noise. The paper's Algorithm 1:

    1. HDBSCAN on the pairwise cosine distances of the local models W_i = G + Δ_i (``cluster_on = "updates"``:
       of the Δ_i), min_cluster_size = ⌊n/2⌋ + 1, min_samples = 1; the majority cluster is admitted;
    2. S_t = median of ‖Δ_i‖ over all n uploads; each admitted Δ_i is clipped to S_t;
    3. the admitted, clipped updates are averaged (unweighted) and N(0, (λ·S_t)²) is added to every coordinate
       (λ = 0.001 for image classification, 0.01 for NLP in the paper).

    ``variant = "snowball-repo"`` is the official Snowball code's FLAME: Euclidean HDBSCAN on the raw updates with
    min_cluster_size = ⌈n/2⌉ (min_samples = its default, min_cluster_size), admit the cluster labelled 0, S_t =
    the median norm of the admitted updates. No cluster at all (every upload noise) admits nobody: the model
    stays where it is this round."""

    noise_lambda: float = hp(0.001, ge=0, help="noise std λ in units of the clipping bound S_t")
    cluster_on: str = hp("models", choices=("models", "updates"), help="cosine distances of W_i (paper) or Δ_i")
    variant: str = hp("canonical", choices=("canonical", "snowball-repo"), help="the paper's rule or the "
                      "official Snowball repo's simplification")

    def admitted(self, items: Items, points: torch.Tensor, ctx: Optional[AggregationContext]) -> list[int]:
        n = len(items)
        if self.variant == "snowball-repo":
            distances = torch.cdist(points.double(), points.double()).numpy()
            return majority_cluster(distances, max(2, math.ceil(n / 2)), None, largest=False)
        space = points
        if self.cluster_on == "models" and ctx is not None:
            origin = flat(_matching(ctx.global_params, items[0][1]))
            space = points + origin[None, :]
        return majority_cluster(cosine_distances(space), max(2, n // 2 + 1), 1)

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        points = flat_matrix(items)
        admitted = self.admitted(items, points, ctx) if len(items) > 1 else [0]
        report_admitted(ctx, items, admitted)
        if not admitted:
            return tree_zeros_like(items[0][1])
        norms = torch.linalg.vector_norm(points.double(), dim=1)
        pool = norms[admitted] if self.variant == "snowball-repo" else norms
        bound = _median(pool)
        coeffs = torch.zeros(len(items), dtype=torch.float64)
        coeffs[admitted] = clip_factors(norms[admitted], bound) / len(admitted)
        if ctx is not None:
            ctx.metrics["flame_clip_bound"] = bound
        return add_noise(combine(items, coeffs), self.noise_lambda * bound, generator_or_default(ctx, "flame"))


def _median(values: torch.Tensor) -> float:
    """The median (the mean of the two middle values for an even count), as numpy's."""
    return float(np.median(values.numpy()))


def _matching(params: dict, like: Tree) -> Tree:
    """The entries of ``params`` at the paths of the upload ``like`` (uploads may hold part of the model)."""
    if isinstance(like, torch.Tensor):
        return params
    missing = [key for key in like if key not in params]
    if missing:
        raise ConfigError(f"flame.cluster_on = models needs uploads that are updates of the server's parameters, "
                          f"but {missing[:3]} are not server parameters; use --flame.cluster-on updates")
    return {key: _matching(params[key], sub) for key, sub in like.items()}
