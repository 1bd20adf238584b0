"""Zeroth-order (two-point, MeZO-style) training over a parameter dict, with every random direction regenerated
from an integer seed instead of being stored.

MeZO: Malladi, Gao, Nichani, Damian, Lee, Chen, Arora, "Fine-Tuning Language Models with Just Forward Passes",
NeurIPS 2023. FedKSeed: Qin, Chen, Qian, Ding, Li, Deng, "Federated Full-Parameter Tuning of Billion-Sized
Language Models with Communication Cost under 18 Kilobytes", ICML 2024. One step with seed s:

    z = N(0, I) drawn from s, one tensor per parameter, in the dict's order;
    ĝ = (L(w + εz) − L(w − εz)) / (2ε);       w ← w − η ĝ z.

The two probes are written into one scratch copy of the parameters (the weights themselves are only touched by
the update), so a list of (seed, ĝ) pairs replayed on the start weights gives back the trained weights bit for bit.
z is regenerated tensor by tensor for each of the three uses and is never held whole: memory is two copies of
the parameters (weights and probe) plus one tensor of z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from fedloom.algorithms.tree import Params
from fedloom.seeding import numpy_generator

#: ``loss(params) -> 0-dim tensor`` on one fixed minibatch
LossFn = Callable[[Params], torch.Tensor]
#: seeds are drawn from [1, 10^11), as the official FedKSeed code draws its candidate seeds
SEED_HIGH = 10**11


def candidate_seeds(root_seed: int, k: int) -> torch.Tensor:
    """The K candidate seeds every party derives from the run seed (int64 [K], each in [1, 10^11))."""
    rng = numpy_generator(root_seed, -1, -1, "fedkseed-candidate-seeds")
    return torch.from_numpy(rng.integers(1, SEED_HIGH, size=k, dtype=np.int64))


def perturbed_names(params: Params) -> list[str]:
    """The tensors a direction covers: every floating-point parameter, in the dict's (named_parameters) order."""
    return [name for name, value in params.items() if value.is_floating_point()]


def directions(params: Params, names: Sequence[str], seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, z[name]) with z ~ N(0, I) from ``seed``: the same seed gives the same z on every party (same
    names, order, shapes, dtype and device type)."""
    device = params[names[0]].device if names else torch.device("cpu")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    for name in names:
        ref = params[name]
        yield name, torch.randn(ref.shape, generator=gen, dtype=ref.dtype, device=ref.device)


def as_float32(value: float) -> float:
    """``value`` rounded to float32 (what an upload carries), so that the trainer and a replay use the same step."""
    return float(np.float32(value))


def apply_seed(params: Params, names: Sequence[str], seed: int, scale: float) -> None:
    """In place: w ← w − scale · z(seed). The one update op of training, replay and the server's rebuild."""
    for name, z in directions(params, names, seed):
        params[name].sub_(z, alpha=scale)


def replay(params: Params, seeds: Sequence[int], grads: Sequence[float], lr: float) -> Params:
    """A copy of ``params`` after the steps ``(seed, ĝ)`` in order: what a client's upload lets anyone rebuild."""
    out = {name: value.clone() for name, value in params.items()}
    names = perturbed_names(out)
    for seed, grad in zip(seeds, grads):
        apply_seed(out, names, int(seed), lr * as_float32(float(grad)))
    return out


def two_point(params: Params, probe: Params, names: Sequence[str], seed: int, eps: float,
              loss: LossFn) -> tuple[float, float]:
    """(L(w + εz), L(w − εz)), written into ``probe`` (a scratch copy of ``params``); ``params`` is untouched."""
    values = []
    for sign in (1.0, -1.0):
        for name, z in directions(params, names, seed):
            torch.add(params[name], z, alpha=sign * eps, out=probe[name])
        values.append(float(loss(probe)))
    return values[0], values[1]


@dataclass
class ZOTrace:
    """What a run of ZO steps did: the (seed position, ĝ) of every applied step, and the losses seen."""

    positions: list[int] = field(default_factory=list)
    grads: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class ZOSettings:
    lr: float
    eps: float
    #: skip a step whose |L+ − L−| exceeds this (the official code's grad_clip); None: never
    max_loss_diff: Optional[float] = None


def zo_steps(params: Params, seeds: Sequence[int], positions: Sequence[int], losses: Sequence[LossFn],
             settings: ZOSettings) -> ZOTrace:
    """In place on ``params``: one two-point step per (position, loss), with seed ``seeds[position]``. A step
    whose loss difference is not finite (or larger than ``max_loss_diff``) is skipped and not recorded, as the
    official code does, so the trace replays exactly."""
    names = perturbed_names(params)
    probe = {name: value.clone() for name, value in params.items()}
    trace = ZOTrace()
    for position, loss in zip(positions, losses):
        seed = int(seeds[position])
        plus, minus = two_point(params, probe, names, seed, settings.eps, loss)
        diff = plus - minus
        if not math.isfinite(diff) or (settings.max_loss_diff is not None and abs(diff) > settings.max_loss_diff):
            trace.skipped += 1
            continue
        grad = as_float32(diff / (2.0 * settings.eps))
        apply_seed(params, names, seed, settings.lr * grad)
        trace.positions.append(int(position))
        trace.grads.append(grad)
        trace.losses.append(0.5 * (plus + minus))
    return trace


def minibatches(indices: torch.Tensor, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``steps`` minibatches of ``indices``: reshuffled passes cut into batches (a DataLoader with shuffle=True
    and drop_last=False, iterated for as many batches as asked)."""
    out: list[torch.Tensor] = []
    n = int(indices.shape[0])
    while len(out) < steps and n:
        order = indices[torch.randperm(n, generator=generator)]
        out.extend(order.split(batch_size))
    return out[:steps]
