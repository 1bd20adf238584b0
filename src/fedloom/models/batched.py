"""Hand-batched forward passes over client-stacked parameters, for the vectorized engine.

``torch.func.vmap`` turns a convolution over S stacked clients into S small convolutions or a generic batched
rule; writing the S clients as *groups* of one grouped convolution (and their linear layers as one ``bmm``)
gives the backend one large kernel per layer instead. A model opts in by setting
``SplitModel.batched_forward``: ``(stacked params [S, ...], x [S, B, ...]) -> logits [S, B, C]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [B, S·Cin, H, W], weight [S, Cout, Cin, k, k], bias [S, Cout] -> [B, S·Cout, H', W']."""
    slots = weight.shape[0]
    return F.conv2d(x, weight.flatten(0, 1), bias.flatten(), groups=slots)


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [S, B, in], weight [S, out, in], bias [S, out] -> [S, B, out]."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def fedavg_cnn_batched(params: Params, x: torch.Tensor) -> torch.Tensor:
    """FedAvgCNN (models/cnn.py: body.0 conv, body.3 conv, body.7 fc, head fc) for S clients at once."""
    slots, batch = x.shape[:2]
    h = x.transpose(0, 1).flatten(1, 2)  # [B, S·C, H, W]: client s owns channel group s
    h = F.relu(F.max_pool2d(grouped_conv(h, params["body.0.weight"], params["body.0.bias"]), 2))  # cnn.py's order
    h = F.relu(F.max_pool2d(grouped_conv(h, params["body.3.weight"], params["body.3.bias"]), 2))
    h = h.reshape(batch, slots, -1).transpose(0, 1)  # [S, B, 64·h·w], same flattening order as nn.Flatten
    h = F.relu(batched_linear(h, params["body.7.weight"], params["body.7.bias"]))
    return batched_linear(h, params["head.weight"], params["head.bias"])
