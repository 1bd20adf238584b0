"""Instruction tuning of a causal language model: prompt/response examples, loss on the response tokens only.

The model (models/lm.py) scores each packed example [2, L] (token ids, response mask) into per-position
next-token losses, the mask and greedy-correct flags, all masked, so prompt and padding tokens never reach the
loss. A sample's training loss is the mean over its response tokens (Σ loss / Σ mask); evaluation sums are
additive over tokens, so the pooled ``loss`` is the token-weighted mean response loss, ``accuracy`` the share
of response tokens the model predicts right greedily (the primary metric: higher is better, as summaries
assume), ``perplexity`` exp(loss). Rouge-L of greedy generations, the paper's final metric (Qin et al., ICML
2024), needs decoding and is computed on the final model by ``fedloom.llm.evaluate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedloom.tasks.base import TASKS

LOSS, MASK, CORRECT = 0, 1, 2  # the scored-output channels of models/lm.py


@TASKS.register("instruction")
@dataclass(frozen=True)
class Instruction:
    primary_metric: str = "accuracy"

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # mean over the sample's response tokens; a sample with no response token contributes 0
        return outputs[:, LOSS].sum(-1) / outputs[:, MASK].sum(-1).clamp(min=1.0)

    def mean_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_sample_loss(outputs, targets).mean()

    def eval_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_sum": outputs[:, LOSS].sum(), "tokens": outputs[:, MASK].sum(),
                "correct": outputs[:, CORRECT].sum(), "count": torch.tensor(outputs.shape[0])}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        tokens = max(sums.get("tokens", 0.0), 1.0)
        loss = sums["loss_sum"] / tokens
        return {"accuracy": sums["correct"] / tokens, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
