"""Tokenizers for instruction datasets: the tokenizer of a Hugging Face model directory, or a byte-level BPE
(as GPT-2's; Sennrich et al., ACL 2016; Radford et al., 2019) trained locally with the ``tokenizers`` package on
a given corpus and cached under ``~/.cache/fedloom/llm/tokenizers/<content hash>``.

Token 0 is ``<|endoftext|>``: end of a response and padding (GPT-2's convention of one special token).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

from fedloom.errors import ConfigError, DataError
from fedloom.extras import require

EOS = "<|endoftext|>"
EOS_ID = 0


def cache_root(root: Optional[Path] = None) -> Path:
    from fedloom.data.download import default_data_root

    return (root or default_data_root()) / "llm"


def corpus_hash(texts: Sequence[str], *parts: Any) -> str:
    """sha256 over the texts and any settings: the key of everything derived from the corpus."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
    for text in texts:
        digest.update(len(text).to_bytes(8, "little"))
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:20]


def train_bpe(texts: Sequence[str], vocab_size: int, cache: Optional[Path] = None) -> Any:
    """A byte-level BPE of ``vocab_size`` tokens trained on ``texts`` (cached by content hash): a
    ``tokenizers.Tokenizer``. Deterministic for a given corpus and size."""
    tk = require("tokenizers", "llm", "the BPE tokenizer")
    folder = cache_root(cache) / "tokenizers" / corpus_hash(texts, "bpe-v1", vocab_size)
    path = folder / "tokenizer.json"
    if path.is_file():
        return tk.Tokenizer.from_file(str(path))
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tokenizer.json.tmp"
    tokenizer.save(str(tmp))
    tmp.replace(path)
    return tokenizer


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in a model directory (its ``tokenizer.json``), as a ``tokenizers.Tokenizer``."""
    tk = require("tokenizers", "llm", "the tokenizer")
    folder = Path(directory).expanduser()
    path = folder / "tokenizer.json" if folder.is_dir() else folder
    if not path.is_file():
        raise ConfigError(f"{directory}: no tokenizer.json (a model directory written by fedloom.llm.pretrain or "
                          f"any Hugging Face fast tokenizer)")
    try:
        return tk.Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises its own Exception types
        raise DataError(f"{path}: cannot read the tokenizer ({exc})") from None


def save_for_transformers(tokenizer: Any, folder: Path) -> None:
    """Write ``tokenizer`` into a model directory so that ``AutoTokenizer.from_pretrained(folder)`` loads it."""
    transformers = require("transformers", "llm", "saving a tokenizer")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS,
                                                bos_token=EOS, unk_token=EOS)
    fast.save_pretrained(str(folder))
