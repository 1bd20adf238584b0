"""Multinomial logistic regression: flatten, one linear layer (the head). The body is the identity."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fedloom.models.base import MODELS, SplitModel, flat_size


@MODELS.register("logreg")
@dataclass(frozen=True)
class LogReg:
    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        dim = flat_size(input_shape)
        return SplitModel(nn.Flatten(), nn.Linear(dim, num_classes), feature_dim=dim)
