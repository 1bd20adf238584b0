"""Causal language models from Hugging Face ``transformers`` (optional extra ``llm``) as fedloom models.

* ``gpt2-nano`` / ``gpt2-tiny`` / ``gpt2-mini`` / ``gpt2-small``: GPT-2 architectures (Radford et al., 2019) built
  from a config with random initialisation (from the run's model-init stream); ``gpt2-small`` is the 124 M
  original shape. Dropout is off (zeroth-order methods compare two forward passes, which must be deterministic).
* ``hf``: a pretrained causal LM from a local directory (``--model hf:DIR``, the same as ``--model hf --hf.path
  DIR``; offline), or from the hub with ``--hf.online true`` (on request only). A path that does not exist, or a model that is not a causal LM, is one
  ConfigError before training.

Parameters are the Hugging Face model's own ``named_parameters()`` (``transformer.h.0.attn.c_attn.weight``...):
there is no body/head split. The model is the Hugging Face class with one extra ``forward`` entry point that
fedloom calls: ``forward(x)`` with ``x`` int64 [B, 2, L] (token ids, and 1 where the token is part of the
response whose prediction is scored) returns float [B, 3, L−1]: per position the next-token loss, the mask and
whether the greedy prediction was right, all already multiplied by the mask (see tasks/instruction.py). Called
with Hugging Face keyword arguments (``input_ids=``...) it is the plain model, so generation works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.extras import require
from fedloom.models.base import MODELS

#: scored-output channels: next-token loss, response mask, greedy prediction right
LOSS, MASK, CORRECT = 0, 1, 2


class ScoredCausalLM:
    """Mixed into a Hugging Face causal-LM class (see ``scored``): fedloom's forward on packed [B, 2, L] input."""

    def forward(self, x: Optional[torch.Tensor] = None, part: str = "all", **kwargs: Any) -> Any:
        if x is None:  # Hugging Face call (generation, tools): the plain model
            return super().forward(**kwargs)  # type: ignore[misc]
        if part != "all":
            raise ValueError("a causal LM has no body/head parts")
        ids, mask = x[:, 0], x[:, 1]
        # right padding under a causal mask never reaches a scored position; an all-ones mask says so
        logits = super().forward(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]  # type: ignore[misc]
        return score_tokens(logits, ids[:, 1:], mask[:, 1:])


def score_tokens(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 3, T]: masked next-token loss, mask, masked greedy-correct (float)."""
    m = mask.to(logits.dtype)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    correct = (logits.argmax(dim=-1) == targets).to(m.dtype)
    return torch.stack([nll.view_as(m) * m, m, correct * m], dim=1).float()


_SCORED: dict[type, type] = {}


def scored(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (a Hugging Face causal LM) with fedloom's forward; same parameters, same names."""
    cls = type(model)
    if cls not in _SCORED:
        _SCORED[cls] = type(f"Scored{cls.__name__}", (ScoredCausalLM, cls), {"__module__": __name__})
    model.__class__ = _SCORED[cls]
    return model.eval()  # dropout off (the template is never trained in place)


def plain(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face class back (for ``save_pretrained``)."""
    for base, wrapped in _SCORED.items():
        if type(model) is wrapped:
            model.__class__ = base
    return model


def check_input(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 2 or input_shape[0] != 2:
        raise ConfigError(f"model '{name}' needs an instruction dataset (token ids and response mask, [2, L]), e.g. "
                          f"--dataset shakespeare-instruct; this dataset has input shape {tuple(input_shape)}")


@dataclass(frozen=True)
class GPT2Spec:
    """A GPT-2 architecture with random initialisation."""

    n_layer: int = hp(2, ge=1, help="transformer blocks")
    n_head: int = hp(2, ge=1, help="attention heads")
    n_embd: int = hp(64, ge=1, help="width (a multiple of n_head)")
    n_positions: int = hp(256, ge=2, help="longest sequence")
    vocab_size: Optional[int] = hp(None, ge=2, help="vocabulary size (None: the dataset's tokenizer's)")

    name: ClassVar[str] = "gpt2"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.n_embd % self.n_head:
            raise ConfigError(f"{self.name}.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    def config(self) -> Any:
        transformers = require("transformers", "llm", f"model '{self.name}'")
        if self.vocab_size is None:
            raise ConfigError(f"model '{self.name}' needs the vocabulary size: use a tokenized dataset "
                              f"(shakespeare-instruct) or set --{self.name}.vocab-size")
        return transformers.GPT2Config(vocab_size=self.vocab_size, n_positions=self.n_positions, n_embd=self.n_embd,
                                       n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
        check_input(self.name, input_shape)
        if input_shape[1] > self.n_positions:
            raise ConfigError(f"{self.name}.n_positions ({self.n_positions}) is shorter than the dataset's "
                              f"sequences ({input_shape[1]} tokens)")
        transformers = require("transformers", "llm", f"model '{self.name}'")
        return scored(transformers.GPT2LMHeadModel(self.config()))


@MODELS.register("gpt2-nano")
@dataclass(frozen=True)
class GPT2Nano(GPT2Spec):
    """~40 k parameters with a 512-token vocabulary (~0.1 M with 2,048): for tests."""

    n_layer: int = hp(1, ge=1, help="transformer blocks")
    n_head: int = hp(2, ge=1, help="attention heads")
    n_embd: int = hp(32, ge=1, help="width")
    name: ClassVar[str] = "gpt2-nano"


@MODELS.register("gpt2-tiny")
@dataclass(frozen=True)
class GPT2Tiny(GPT2Spec):
    """~1-2 M parameters (4 blocks of width 128): pretrains on 2 CPU cores in minutes."""

    n_layer: int = hp(4, ge=1, help="transformer blocks")
    n_head: int = hp(4, ge=1, help="attention heads")
    n_embd: int = hp(128, ge=1, help="width")
    name: ClassVar[str] = "gpt2-tiny"


@MODELS.register("gpt2-mini")
@dataclass(frozen=True)
class GPT2Mini(GPT2Spec):
    """~5 M parameters with a 2,048-token vocabulary (6 blocks of width 256)."""

    n_layer: int = hp(6, ge=1, help="transformer blocks")
    n_head: int = hp(8, ge=1, help="attention heads")
    n_embd: int = hp(256, ge=1, help="width")
    name: ClassVar[str] = "gpt2-mini"


@MODELS.register("gpt2-small")
@dataclass(frozen=True)
class GPT2Small(GPT2Spec):
    """GPT-2 small's shape (12 blocks of width 768, 1024 positions; 124 M parameters with its 50,257 tokens)."""

    n_layer: int = hp(12, ge=1, help="transformer blocks")
    n_head: int = hp(12, ge=1, help="attention heads")
    n_embd: int = hp(768, ge=1, help="width")
    n_positions: int = hp(1024, ge=2, help="longest sequence")
    name: ClassVar[str] = "gpt2-small"


@MODELS.register("hf")
@dataclass(frozen=True)
class HFCausalLM:
    """A pretrained Hugging Face causal LM: ``--model hf:DIR`` or ``--model hf --hf.path DIR`` (a model directory,
    e.g. one written by ``python -m fedloom.llm.pretrain``)."""

    path: str = hp("", help="model directory (or a hub name with --hf.online true)")
    online: bool = hp(False, help="allow downloading a hub model (default: local files only)")
    vocab_size: Optional[int] = hp(None, ge=2, help="filled from the dataset: checked against the model's")

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self) -> torch.nn.Module:
        """The model in float32 (zeroth-order steps on CPU need the precision), or one ConfigError."""
        transformers = require("transformers", "llm", "model 'hf'")
        if not self.path:
            raise ConfigError("model 'hf' needs --hf.path (a Hugging Face model directory)")
        if not self.online and not Path(self.path).expanduser().is_dir():
            raise ConfigError(f"--hf.path {self.path}: no such model directory (pass --hf.online true to download "
                              f"a hub model)")
        try:
            config = transformers.AutoConfig.from_pretrained(str(Path(self.path).expanduser()) if not self.online
                                                             else self.path, local_files_only=not self.online)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(Path(self.path).expanduser()) if not self.online else self.path, config=config,
                local_files_only=not self.online).float()
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--hf.path {self.path} is not a loadable causal language model: {first}") from None
        return model

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
        check_input("hf", input_shape)
        model = self.load()
        vocab = int(model.get_input_embeddings().weight.shape[0])
        if self.vocab_size is not None and self.vocab_size > vocab:
            raise ConfigError(f"--hf.path {self.path}: the model knows {vocab} tokens but the dataset's tokenizer has "
                              f"{self.vocab_size}; tokenize the dataset with this model's tokenizer")
        return scored(model)


def hf_model_spelling(cfg: Any) -> Any:
    """``--model hf:PATH`` as ``--model hf --hf.path PATH`` (a RunConfig with the registry name and its option);
    any other config unchanged."""
    parts = [part.strip() for part in (cfg.model or "").split(",")]
    paths = {part[3:] for part in parts if part.lower().startswith("hf:")}
    if not paths:
        return cfg
    if len(paths) > 1:
        raise ConfigError(f"--model {cfg.model}: at most one hf:PATH per run")
    path = paths.pop()
    table = dict(cfg.options.get("hf", {}))
    if table.get("path") not in (None, "", path):
        raise ConfigError(f"--model hf:{path} and --hf.path {table['path']} name different models; give one")
    model = ",".join("hf" if part.lower().startswith("hf:") else part for part in parts)
    return dataclasses.replace(cfg, model=model, options={**cfg.options, "hf": {**table, "path": path}})
