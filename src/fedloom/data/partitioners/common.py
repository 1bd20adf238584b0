"""Validation and finishing steps shared by all partitioners."""

from __future__ import annotations

import logging

from typing import Callable, Optional, Sequence

import numpy as np

from fedloom.data.base import PartitionSpec
from fedloom.errors import ConfigError, DataError


def check_clients(num_samples: int, spec: PartitionSpec) -> None:
    """ConfigError unless 1 <= num_clients <= num_samples; DataError if min_samples cannot be met at all."""
    if spec.num_clients < 1:
        raise ConfigError(f"number of clients must be >= 1 (got {spec.num_clients})")
    if spec.num_clients > num_samples:
        raise ConfigError(
            f"more clients than samples: {spec.num_clients} clients but the dataset has {num_samples} samples"
        )
    if spec.min_samples < 0:
        raise ConfigError(f"min_samples must be >= 0 (got {spec.min_samples})")
    if spec.num_clients * spec.min_samples > num_samples:
        raise DataError(
            f"cannot give each of {spec.num_clients} clients at least {spec.min_samples} samples: the dataset "
            f"has only {num_samples} samples; use fewer clients or a smaller min_samples"
        )


def finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sorted int64 copies of each client's indices."""
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def check_min_samples(parts: Sequence[np.ndarray], spec: PartitionSpec, hint: str) -> None:
    """DataError naming the smallest client when some client has fewer than spec.min_samples samples."""
    sizes = np.array([len(p) for p in parts])
    if sizes.size and sizes.min() < spec.min_samples:
        worst = int(sizes.argmin())
        raise DataError(
            f"{spec.name} partition: client {worst} has {int(sizes[worst])} samples, fewer than the required "
            f"min_samples={spec.min_samples}; {hint}"
        )


def as_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a 1-D int64 array."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional (got shape {arr.shape})")
    return arr.astype(np.int64, copy=False)


def parts_from_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Per-client sorted index arrays from a per-sample owner array (-1 = sample assigned to nobody)."""
    assigned = np.flatnonzero(owner >= 0)
    order = assigned[np.argsort(owner[assigned], kind="stable")]
    sizes = np.bincount(owner[assigned], minlength=num_clients)
    return finish(np.split(order, np.cumsum(sizes)[:-1]))


def class_indices(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct label, in increasing label order."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def check_positive(value: float, name: str, partition: str) -> None:
    """ConfigError unless ``value`` is a finite number > 0 (Dirichlet concentrations, tail indices)."""
    if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
        raise ConfigError(f"{partition}: {name} must be a positive number (got {value})")


def dirichlet_setup(labels: np.ndarray, spec: PartitionSpec, partition: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """What every Dirichlet label partition starts with: labels as int64, alpha and the client count checked,
    the sample indices of each class (in increasing label order). Draws nothing."""
    labels = as_labels(labels)
    check_positive(spec.alpha, "alpha", partition)
    check_clients(len(labels), spec)
    return labels, class_indices(labels)


def dirichlet_cut(idx: np.ndarray, owners: np.ndarray, alpha: float, owner: np.ndarray, sizes: np.ndarray,
                  rng: np.random.Generator) -> None:
    """Deal one class among ``owners`` (PFLlib's Dirichlet step): shuffle its samples ``idx``, draw
    p ~ Dir(alpha · 1_|owners|), give share 0 to owners already holding >= n/N samples (``balance``; n =
    ``len(owner)`` samples, N = ``len(sizes)`` clients), cut the shuffled samples in proportions p. Writes the
    new owners into ``owner[idx]`` and adds the counts to ``sizes[owners]``, in place."""
    idx = rng.permutation(idx)
    p = balance(rng.dirichlet(np.full(len(owners), float(alpha))), sizes[owners] < len(owner) / len(sizes))
    counts = np.diff(np.concatenate(([0], (np.cumsum(p) * len(idx)).astype(np.int64)[:-1], [len(idx)])))
    owner[idx] = np.repeat(owners, counts)
    sizes[owners] += counts


def balance(p: np.ndarray, open_: np.ndarray) -> np.ndarray:
    """Zero the share of clients that are full and renormalize; falls back to uniform over open clients."""
    q = np.where(open_, np.nan_to_num(p), 0.0)
    if q.sum() <= 0:
        q = open_.astype(np.float64) if open_.any() else np.ones_like(p)
    return q / q.sum()


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (Hamilton's largest-remainder rule)."""
    share = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    base = np.floor(share).astype(np.int64)
    left = int(total - base.sum())
    # ties broken by position so that the result depends only on the weights
    base[np.argsort(-(share - base), kind="stable")[:left]] += 1
    return base


def repair_min_size(
    owner: np.ndarray, labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator,
    allowed: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Move samples to clients below spec.min_samples from the largest clients that can spare them.

    Each step takes from the largest eligible donor (more than min_samples samples, and holding a class the
    receiver may hold) the class the receiver already holds most of (ties: the donor's majority class), so
    label skew is mostly kept. ``allowed`` [clients, classes] restricts which classes a client may receive
    (extended Dirichlet keeps its C classes per client). Owners of -1 (unassigned samples) are never touched.
    Raises DataError when no donor can spare a sample.
    """
    owner = owner.copy()
    k, m = spec.num_clients, spec.min_samples
    classes, pos = np.unique(labels, return_inverse=True)
    mask = owner >= 0
    counts = np.bincount(owner[mask] * len(classes) + pos[mask], minlength=k * len(classes)).reshape(k, -1)
    ok = np.ones_like(counts, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    sizes = counts.sum(axis=1)
    for r in np.flatnonzero(sizes < m):
        while sizes[r] < m:
            d = _donor(counts, sizes, ok[r], m)
            if d < 0:
                raise DataError(f"{spec.name} partition: cannot give client {r} min_samples={m} samples (it has "
                                f"{sizes[r]}); use fewer clients or a smaller min_samples")
            score = np.where((counts[d] > 0) & ok[r], counts[r] * (len(labels) + 1) + counts[d], -1)
            c = int(score.argmax())
            take = int(min(m - sizes[r], sizes[d] - m, counts[d, c]))
            cand = np.flatnonzero((owner == d) & (pos == c))
            owner[rng.choice(cand, size=take, replace=False)] = r
            counts[d, c] -= take
            counts[r, c] += take
            sizes[d] -= take
            sizes[r] += take
    return owner


def _donor(counts: np.ndarray, sizes: np.ndarray, ok_r: np.ndarray, m: int) -> int:
    """The largest client with more than m samples of which some are in classes the receiver may take; -1 if none."""
    eligible = (sizes > m) & (counts[:, ok_r].sum(axis=1) > 0)
    if not eligible.any():
        return -1
    return int(np.where(eligible, sizes, -1).argmax())


def draw_until_min_size(
    draw: Callable[[], tuple[np.ndarray, Optional[np.ndarray]]], labels: np.ndarray, spec: PartitionSpec,
    rng: np.random.Generator, name: str, attempts: int = 50,
) -> list[np.ndarray]:
    """Redraw ``draw() -> (owner, allowed)`` until every client has >= spec.min_samples samples; after
    ``attempts`` failures, repair the draw whose smallest client was largest (so this always terminates).

    ``owner`` maps each sample to a client (-1: unassigned); ``allowed`` optionally restricts the classes a
    client may receive during repair (see repair_min_size).
    """
    best: Optional[tuple[int, np.ndarray, Optional[np.ndarray]]] = None
    for _ in range(attempts):
        owner, allowed = draw()
        smallest = int(np.bincount(owner[owner >= 0], minlength=spec.num_clients).min())
        if smallest >= spec.min_samples:
            return parts_from_owner(owner, spec.num_clients)
        if best is None or smallest > best[0]:
            best = (smallest, owner, allowed)
    assert best is not None
    logging.getLogger(__name__).info("%s: no draw gave every client >= %d samples; repairing the best draw",
                                     name, spec.min_samples)
    return parts_from_owner(repair_min_size(best[1], labels, spec, rng, allowed=best[2]), spec.num_clients)
