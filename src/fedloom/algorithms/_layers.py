"""Functional layers for the extra modules of the personalized-FL methods (FedCP's policy network, GPFL's
conditional valve and category embedding): parameter trees created from an explicit generator and applied
with plain tensor ops, so they live in states, uploads and broadcasts like any other tree.

Initialisations reproduce PyTorch's defaults (nn.Linear: U(±1/√fan_in) for weight and bias; nn.LayerNorm:
ones and zeros; nn.Embedding: N(0, 1)), drawn from the given generator instead of the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fedloom.algorithms.tree import Params


def linear_init(generator: torch.Generator, fan_in: int, fan_out: int) -> Params:
    bound = 1.0 / math.sqrt(fan_in)
    weight = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return {"weight": weight, "bias": bias}


def layer_norm_init(dim: int) -> Params:
    return {"weight": torch.ones(dim), "bias": torch.zeros(dim)}


def embedding_init(generator: torch.Generator, num: int, dim: int) -> torch.Tensor:
    return torch.randn(num, dim, generator=generator)


def linear(x: torch.Tensor, p: Params) -> torch.Tensor:
    return F.linear(x, p["weight"], p["bias"])


def layer_norm(x: torch.Tensor, p: Params) -> torch.Tensor:
    return F.layer_norm(x, p["weight"].shape, p["weight"], p["bias"])


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator, dim: int) -> torch.Tensor:
    """Soft Gumbel-softmax sample (F.gumbel_softmax with hard=False), with the noise from ``generator``:
    −log(E), E ~ Exp(1), is a standard Gumbel variable, as in PyTorch."""
    # drawn on the CPU generator, then moved: the same numbers on every device
    exponential = torch.empty(logits.shape).exponential_(generator=generator).to(logits.device)
    return torch.softmax((logits - exponential.log()) / tau, dim=dim)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (10.0, 15.0, 20.0, 50.0)
            ) -> torch.Tensor:
    """Biased empirical MMD² between the rows of x and y with a sum of RBF kernels exp(−‖a−b‖² / (2a)) over
    the bandwidths a (FedCP's MMD: mean of K_xx + K_yy − 2K_xy over all pairs)."""
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    total = torch.zeros_like(dxx)
    for a in bandwidths:
        total = total + torch.exp(-0.5 * dxx / a) + torch.exp(-0.5 * dyy / a) - 2 * torch.exp(-0.5 * dxy / a)
    return total.mean()


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ‖a_i‖² + ‖b_j‖² − 2⟨a_i, b_j⟩, as FedCP computes it (no clamping, so the gradient matches)
    return (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2 * a @ b.T


def device_of(params: Params) -> torch.device:
    return next(iter(params.values())).device
