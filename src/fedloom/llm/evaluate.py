"""Rouge-L of greedy generations (the FedKSeed paper's final metric; Qin et al., ICML 2024): for each test example,
decode greedily from its prompt with the evaluated parameters (at most ``max_new_tokens``, stopping at
<|endoftext|>), and score the decoded text against the reference response with Rouge-L F1 of the
``rouge-score`` package (Lin, 2004; no stemming), averaged over examples and reported ×100. An empty generation
scores 0."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch.func import functional_call

from fedloom.algorithms.tree import Params
from fedloom.data.datasets.instruct import prompt_and_reference
from fedloom.extras import require
from fedloom.llm.tokenizer import EOS_ID


def rouge_l(prediction: str, reference: str) -> float:
    """Rouge-L F1 (0..1) of one prediction against one reference."""
    scorer = require("rouge_score.rouge_scorer", "llm", "Rouge-L").RougeScorer(["rougeL"], use_stemmer=False)
    if not prediction.strip():
        return 0.0
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the key/value cache argument and output (``cache`` in transformers 5, else
    ``past_key_values``)."""
    hf_forward = next(c.forward for c in type(model).__mro__ if c.__module__.startswith("transformers"))
    return "cache" if "cache" in inspect.signature(hf_forward).parameters else "past_key_values"


@torch.no_grad()
def greedy(model: torch.nn.Module, params: Params, prompt: Sequence[int], max_new_tokens: int,
           max_positions: int) -> list[int]:
    """Greedy continuation of ``prompt`` by ``model`` run with ``params`` (no sampling, one beam)."""
    ids = torch.tensor([list(prompt) or [EOS_ID]], dtype=torch.long, device=next(iter(params.values())).device)
    out: list[int] = []
    past, key = None, cache_argument(model)
    step_input = ids[:, -max_positions + max_new_tokens:]
    for _ in range(max_new_tokens):
        result = functional_call(model, params, (), {"input_ids": step_input, key: past, "use_cache": True},
                                 strict=False)
        past = getattr(result, key)
        token = int(result.logits[0, -1].argmax())
        if token == EOS_ID:
            break
        out.append(token)
        step_input = torch.tensor([[token]], device=ids.device)
    return out


def rouge_l_eval(model: torch.nn.Module, params: Params, tokenizer: Any, x: torch.Tensor,
                 max_new_tokens: int = 32) -> dict[str, float]:
    """Mean Rouge-L (×100) of greedy generations over the packed examples ``x`` [N, 2, L]."""
    max_positions = int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)
    scores, empty = [], 0
    for example in x:
        prompt, reference = prompt_and_reference(example)
        generated = greedy(model, params, prompt, max_new_tokens, max_positions)
        text = tokenizer.decode(generated)
        empty += not text.strip()
        scores.append(rouge_l(text, tokenizer.decode(reference)))
    return {"rouge_l": 100.0 * sum(scores) / max(len(scores), 1), "examples": float(len(scores)),
            "empty_generations": float(empty)}
