"""Model registry and the body/head split shared by every model."""

from __future__ import annotations

import copy
import math
from typing import Callable, Any, Optional

import torch
from torch import nn

from fedloom.errors import ConfigError
from fedloom.registry import Registry
from fedloom.seeding import derive_seed, torch_generator

MODELS: Registry[type] = Registry("model")

HEAD_PREFIX = "head."
BODY_PREFIX = "body."


class SplitModel(nn.Module):
    """``head(body(x))``. ``feature_dim`` is the width of the representation the head sees."""

    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int,
                 batched_forward: Optional[Callable[[dict, torch.Tensor], torch.Tensor]] = None) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim
        # optional hand-batched forward over S client-stacked parameter sets (see models/batched.py)
        self.batched_forward = batched_forward

    def forward(self, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        """part='all': logits; 'body': features of x; 'head': logits from features x.

        One forward with a selector (rather than extra methods) so that torch.func.functional_call, which
        only calls forward, can run each half with an explicit parameter dict.
        """
        if part == "all":
            return self.head(self.body(x))
        if part == "body":
            return self.body(x)
        if part == "head":
            return self.head(x)
        raise ValueError(f"unknown model part {part!r}")


class InitParams(dict):
    """The initial parameters (a plain ``name -> tensor`` dict, like ``model.named_parameters()``) that also
    know where they came from: the run's root ``seed`` and the model ``template``. Algorithms whose extra
    modules (a policy network, an embedding, a private model) must be created in ``init_server`` or
    ``init_client_state`` draw them from their own (seed, purpose) streams with ``generator`` or ``fresh``, so
    they are reproducible and never disturb other random state."""

    def __init__(self, params: dict[str, torch.Tensor], seed: int, template: Optional[nn.Module] = None) -> None:
        super().__init__(params)
        self.seed = int(seed)
        self.template = template

    def generator(self, purpose: str, client: int = -1) -> torch.Generator:
        """The (seed, round -1, client, purpose) stream (client -1: shared by every client)."""
        return torch_generator(self.seed, -1, client, purpose)

    def fresh(self, purpose: str, client: int = -1) -> dict[str, torch.Tensor]:
        """A new draw of the template's own initialisation (each layer's reset_parameters) from the
        (seed, -1, client, purpose) stream: same architecture, independent weights."""
        if self.template is None:
            raise RuntimeError("these initial parameters were built without a model template")
        device = next(self.template.parameters()).device
        model = copy.deepcopy(self.template).cpu()  # drawn on the CPU: the same weights on every device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, -1, client, purpose))
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return {name: p.detach().to(device) for name, p in model.named_parameters()}


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


def is_body(name: str) -> bool:
    return name.startswith(BODY_PREFIX)


def flat_size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def build_model(name: str, options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                seed: int, vocab_size: Optional[int] = None) -> SplitModel:
    """Build a registered model with parameters drawn from the (seed, 'model-init') stream.

    The global torch RNG is forked so that building a model never disturbs other random state. ``vocab_size``
    (a token dataset's) fills a text model's ``vocab_size`` option when the options leave it unset.
    """
    from fedloom.config import component_fields, make_component

    if vocab_size is not None and "vocab_size" in component_fields(MODELS.get(name)):
        given = options.get("vocab_size")
        if given is None:
            options = {**options, "vocab_size": int(vocab_size)}
        elif isinstance(given, int) and given < vocab_size:  # token ids >= given would crash the embedding
            raise ConfigError(f"{name}.vocab_size must be at least the dataset's vocabulary size {vocab_size} "
                              f"(or unset), got {given}")
    spec = make_component(MODELS, name, options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, -1, -1, "model-init"))
        return spec.build(tuple(input_shape), int(num_classes))


def default_model_for(input_shape: tuple[int, ...], vocab_size: Optional[int] = None,
                      num_classes: Optional[int] = None) -> str:
    """cnn for images at least 28x28, mlp for small images, logreg for flat feature vectors; for token data
    (``vocab_size`` given) char-lstm when the classes are the vocabulary (next-token prediction), else fasttext;
    gpt2-tiny for packed instruction examples ([2, L]: token ids and response mask)."""
    if vocab_size is not None and len(input_shape) == 1:
        return "char-lstm" if num_classes == vocab_size else "fasttext"
    if vocab_size is not None and len(input_shape) == 2 and input_shape[0] == 2:
        return "gpt2-tiny"  # packed instruction examples (token ids, response mask): a causal LM (models/lm.py)
    if len(input_shape) == 3 and min(input_shape[1:]) >= 28:
        return "cnn"
    if len(input_shape) == 3:
        return "mlp"
    return "logreg"
