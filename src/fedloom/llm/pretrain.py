"""Pretrain a small GPT-2 on the Shakespeare plays that the federated task does not use, so that federated tuning
starts from a model that knows the language (the FedKSeed paper tunes pretrained LLMs). Writes a Hugging Face
model directory (config, weights, tokenizer.json, ``pretrain.json`` with the losses) cached under
``~/.cache/fedloom/llm/models/<content hash>`` (hash of the corpus, the tokenizer size, the architecture and the
training settings): running it again with the same settings returns the cached directory.

    python -m fedloom.llm.pretrain --model gpt2-tiny --steps 1500 --threads 2
    fedloom run --dataset shakespeare-instruct --shakespeare-instruct.tokenizer DIR --model hf --hf.path DIR ...

Training: next-token prediction on random windows of ``block`` tokens of the concatenated corpus (5% held out
for a validation loss), AdamW with linear warm-up and cosine decay, every draw from ``--seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from fedloom.errors import ConfigError
from fedloom.extras import require
from fedloom.llm.tokenizer import EOS_ID, cache_root, corpus_hash, save_for_transformers, train_bpe
from fedloom.seeding import derive_seed, torch_generator


@dataclass(frozen=True)
class PretrainSettings:
    model: str = "gpt2-tiny"
    vocab_size: int = 2048
    steps: int = 1500
    batch_size: int = 16
    block: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    task_plays: int = 6


def token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """The corpus as one int64 stream, texts separated by <|endoftext|>."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids.extend(encoding.ids + [EOS_ID])
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, batch: int, block: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, stream.numel() - block - 1, (batch,), generator=gen)
    return torch.stack([stream[s:s + block + 1] for s in starts.tolist()])


def lm_loss(model: torch.nn.Module, chunk: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=chunk[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))


def build_model(settings: PretrainSettings) -> torch.nn.Module:
    from fedloom.config import make_component
    from fedloom.models import MODELS

    spec = make_component(MODELS, settings.model, {"vocab_size": settings.vocab_size})
    if not hasattr(spec, "config"):
        raise ConfigError(f"--model {settings.model}: pretraining needs a GPT-2 configuration (gpt2-nano, gpt2-tiny, "
                          f"gpt2-mini, gpt2-small)")
    transformers = require("transformers", "llm", "pretraining")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, -1, -1, "pretrain-init"))
        return transformers.GPT2LMHeadModel(spec.config())


@torch.no_grad()
def validation_loss(model: torch.nn.Module, stream: torch.Tensor, settings: PretrainSettings) -> float:
    model.eval()
    gen = torch_generator(settings.seed, -1, -1, "pretrain-validation")
    losses = [float(lm_loss(model, windows(stream, settings.batch_size, settings.block, gen))) for _ in range(8)]
    model.train()
    return sum(losses) / len(losses)


def train(model: torch.nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor,
          settings: PretrainSettings, progress: bool = False) -> dict[str, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch_generator(settings.seed, -1, -1, "pretrain-batches")
    log: dict[str, Any] = {"initial_val_loss": validation_loss(model, val_ids, settings), "curve": []}
    model.train()
    start = time.perf_counter()
    for step in range(1, settings.steps + 1):
        warm = min(1.0, step / max(settings.warmup, 1))
        cosine = 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        for group in opt.param_groups:
            group["lr"] = settings.lr * warm * (0.1 + 0.9 * cosine)
        loss = lm_loss(model, windows(train_ids, settings.batch_size, settings.block, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(settings.steps // 10, 1) == 0 or step == settings.steps:
            log["curve"].append({"step": step, "train_loss": float(loss.detach()),
                                 "val_loss": validation_loss(model, val_ids, settings)})
            if progress:
                print(f"step {step}: {log['curve'][-1]}", flush=True)
    log["seconds"] = round(time.perf_counter() - start, 1)
    log["final_val_loss"] = log["curve"][-1]["val_loss"]
    return log


def pretrain(settings: PretrainSettings, data_dir: Optional[Path] = None, cache: Optional[Path] = None,
             progress: bool = True) -> Path:
    """The cached model directory for ``settings`` (trained now if absent)."""
    from fedloom.data.datasets.shakespeare_instruct import ShakespeareInstruct

    corpus = ShakespeareInstruct(task_plays=settings.task_plays).pretraining_corpus(data_dir)
    folder = cache_root(cache) / "models" / corpus_hash(corpus, "pretrain-v1", dataclasses.asdict(settings))
    if (folder / "pretrain.json").is_file():
        return folder
    tokenizer = train_bpe(corpus, settings.vocab_size, cache)
    stream = token_stream(tokenizer, corpus)
    cut = int(0.95 * stream.numel())
    model = build_model(settings)
    if progress:
        params = sum(p.numel() for p in model.parameters())
        print(f"pretraining {settings.model} ({params:,} parameters) on {stream.numel():,} tokens", flush=True)
    log = train(model, stream[:cut], stream[cut:], settings, progress)
    log.update(settings=dataclasses.asdict(settings), tokens=int(stream.numel()),
               parameters=sum(p.numel() for p in model.parameters()))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    save_for_transformers(tokenizer, tmp)
    (tmp / "pretrain.json").write_text(json.dumps(log, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedloom.llm.pretrain", description=__doc__.split("\n\n")[0])
    defaults = PretrainSettings()
    for field in dataclasses.fields(PretrainSettings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = vars(parser.parse_args(argv))
    torch.set_num_threads(args.pop("threads"))
    data_dir = args.pop("data_dir")
    folder = pretrain(PretrainSettings(**args), data_dir)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
