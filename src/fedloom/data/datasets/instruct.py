"""Instruction datasets: prompt/response examples packed for a causal LM, and the loaders of the FedKSeed paper's
two benchmarks (Qin et al., ICML 2024) read from local files in their published formats.

A packed example is int64 [2, L]: row 0 the token ids (prompt, then response, then ``<|endoftext|>``, then
padding 0), row 1 the response mask (1 on the response and its end token: the tokens whose prediction is scored).
A prompt longer than what is left after the response loses its beginning (its end is what the model continues).

* ``natural-instructions``: Super-NaturalInstructions v2 (Wang et al., EMNLP 2022; github allenai/
  natural-instructions): ``tasks/<task>.json`` with ``Definition`` (list of str) and ``Instances`` (``input``,
  ``output`` list), optionally ``splits/default/train_tasks.txt`` naming the tasks used. One client per task (the
  paper's setting), tasks with fewer than ``min_instances`` usable instances dropped, ``fraction`` of each task's
  instances kept, the first reference output, the Alpaca prompt template. No download: clone the repository.
* ``dolly``: databricks-dolly-15k (``databricks-dolly-15k.jsonl``: instruction, context, response, category);
  labels = the 8 categories, so ``--partition dirichlet --alpha 0.5`` is the paper's split. ``--dolly.download
  true`` fetches it with the ``datasets`` package (extra ``llm``) on request only.

A record without a required field, or a file that cannot be parsed, is one DataError naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import first_found, missing, search_dirs
from fedloom.data.download import default_data_root, download_requested
from fedloom.errors import DataError
from fedloom.extras import require
from fedloom.seeding import numpy_generator

ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                     "{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def alpaca_prompt(instruction: str, context: str = "") -> str:
    template = ALPACA_WITH_INPUT if context.strip() else ALPACA_NO_INPUT
    return template.format(instruction=instruction.strip(), input=context.strip())


def pack(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], seq_len: int,
         max_response: int) -> np.ndarray:
    """int64 [N, 2, seq_len]: ids and response mask of each (prompt, response) (see the module docstring)."""
    from fedloom.llm.tokenizer import EOS_ID

    out = np.zeros((len(prompts), 2, seq_len), dtype=np.int64)
    prompt_ids = [e.ids for e in tokenizer.encode_batch(list(prompts))] if prompts else []
    response_ids = [e.ids for e in tokenizer.encode_batch(list(responses))] if responses else []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        r = r[:max_response] + [EOS_ID]
        p = p[max(0, len(p) - (seq_len - len(r))):] if seq_len > len(r) else []
        ids = (p + r)[:seq_len]
        out[i, 0, :len(ids)] = ids
        out[i, 1, len(p):len(ids)] = 1
    return out


def prompt_and_reference(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """The prompt ids and the reference response ids (without its end token) of one packed example."""
    from fedloom.llm.tokenizer import EOS_ID

    ids, mask = x[0].tolist(), x[1].tolist()
    start = mask.index(1) if 1 in mask else len(ids)
    response = [t for t, m in zip(ids[start:], mask[start:]) if m]
    if response and response[-1] == EOS_ID:
        response = response[:-1]
    return ids[:start], response


def pooled(name: str, x: np.ndarray, labels: np.ndarray, class_names: list[str], natural: Optional[np.ndarray],
           vocab_size: int, source: str) -> PooledDataset:
    return PooledDataset(name=name, x=torch.from_numpy(x), y=torch.from_numpy(labels.astype(np.int64)),
                         num_classes=len(class_names), natural_ids=natural, class_names=class_names,
                         source=source, vocab_size=vocab_size)


def require_fields(record: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be an object with {', '.join(fields)}")
    absent = [f for f in fields if f not in record]
    if absent:
        raise DataError(f"{where}: missing field{'s' if len(absent) > 1 else ''} {', '.join(absent)}")
    return record


def tokenizer_for(spec: Any, corpus: Optional[Sequence[str]] = None) -> Any:
    """The dataset's tokenizer: a model directory's, or a BPE trained on ``corpus`` (cached)."""
    from fedloom.llm.tokenizer import load_tokenizer, train_bpe

    if spec.tokenizer != "bpe":
        return load_tokenizer(spec.tokenizer)
    if corpus is None:
        raise DataError(f"{spec.registry_name}: set --{spec.registry_name}.tokenizer to a model directory")
    return train_bpe(corpus, spec.vocab_size)


# ------------------------------------------------------------------------------------------------ Natural Instr.
def read_ni_task(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(definition, [(input, first output)]) of one Natural Instructions task file."""
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the task file ({exc})") from None
    require_fields(blob, ("Definition", "Instances"), str(path))
    definition = blob["Definition"][0] if isinstance(blob["Definition"], list) else str(blob["Definition"])
    pairs = []
    for i, inst in enumerate(blob["Instances"]):
        require_fields(inst, ("input", "output"), f"{path}: instance {i}")
        outputs = inst["output"] if isinstance(inst["output"], list) else [inst["output"]]
        if outputs:
            pairs.append((str(inst["input"]), str(outputs[0])))
    return definition, pairs


def ni_task_files(directory: Path) -> Optional[list[Path]]:
    tasks = directory / "tasks"
    files = sorted(tasks.glob("task*.json")) if tasks.is_dir() else []
    listing = directory / "splits" / "default" / "train_tasks.txt"
    if files and listing.is_file():
        wanted = {line.strip() for line in listing.read_text().splitlines() if line.strip()}
        files = [f for f in files if f.stem in wanted]
    return files or None


@DATASETS.register("natural-instructions")
@dataclass(frozen=True)
class NaturalInstructions:
    """Super-NaturalInstructions task files, one client per task, the FedKSeed paper's filters (Alpaca prompts)."""

    tokenizer: str = hp("bpe", help="a model directory with tokenizer.json, or 'bpe' (trained on the prompts)")
    vocab_size: int = hp(4096, ge=256, help="BPE vocabulary size (tokenizer = bpe)")
    seq_len: int = hp(256, ge=8, help="tokens per packed example")
    max_response: int = hp(64, ge=1, help="response tokens kept")
    min_instances: int = hp(20, ge=1, help="fewest usable instances a task needs (the paper: 20)")
    fraction: float = hp(0.2, gt=0, le=1, help="share of each task's instances kept (the paper: 0.2)")
    max_chars: int = hp(1024, ge=1, help="instances with a longer input are dropped (the paper: 1024)")
    max_tasks: Optional[int] = hp(None, ge=1, help="keep only the first tasks (None: all)")

    default_partition: ClassVar[str] = "natural"
    task: ClassVar[str] = "instruction"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, ("natural-instructions",))
        files = first_found(tried, ni_task_files)
        if files is None:
            raise missing("Natural Instructions", "tasks/task*.json (and splits/default/train_tasks.txt)", tried,
                          "git clone https://github.com/allenai/natural-instructions ~/.cache/fedloom/"
                          "natural-instructions")
        prompts, responses, labels, names = [], [], [], []
        for path in files[: self.max_tasks]:
            definition, pairs = read_ni_task(path)
            pairs = [(i, o) for i, o in pairs if len(i) < self.max_chars]
            if len(pairs) < self.min_instances:
                continue
            rng = numpy_generator(ctx.seed, -1, len(names), "ni-fraction")
            keep = np.sort(rng.choice(len(pairs), size=max(1, int(self.fraction * len(pairs))), replace=False))
            for j in keep:
                prompts.append(alpaca_prompt(definition, pairs[j][0]))
                responses.append(pairs[j][1])
                labels.append(len(names))
            names.append(path.stem)
        if not names:
            raise DataError(f"{files[0].parent}: no task has {self.min_instances} usable instances")
        tokenizer = tokenizer_for(self, prompts + responses)
        x = pack(tokenizer, prompts, responses, self.seq_len, self.max_response)
        y = np.asarray(labels)
        return pooled("natural-instructions", x, y, names, y.copy(), tokenizer.get_vocab_size(),
                      str(files[0].parent.parent))


# ------------------------------------------------------------------------------------------------ Dolly
DOLLY_FILE = "databricks-dolly-15k.jsonl"
DOLLY_FIELDS = ("instruction", "context", "response", "category")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc})") from None
            records.append(require_fields(record, fields, f"{path}:{number}"))
    return records


def dolly_file(directory: Path) -> Optional[Path]:
    path = directory / DOLLY_FILE
    return path if path.is_file() else None


def fetch_dolly(folder: Path) -> Path:
    """databricks-dolly-15k through the ``datasets`` package, written as its jsonl (on request only)."""
    datasets = require("datasets", "llm", "--dolly.download")
    folder.mkdir(parents=True, exist_ok=True)
    rows = datasets.load_dataset("databricks/databricks-dolly-15k", split="train")
    tmp = folder / (DOLLY_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({k: row[k] for k in DOLLY_FIELDS}) + "\n")
    tmp.replace(folder / DOLLY_FILE)
    return folder / DOLLY_FILE


@DATASETS.register("dolly")
@dataclass(frozen=True)
class Dolly:
    """databricks-dolly-15k jsonl; labels = its 8 categories (--partition dirichlet --alpha 0.5: the paper's split)."""

    tokenizer: str = hp("bpe", help="a model directory with tokenizer.json, or 'bpe' (trained on the examples)")
    vocab_size: int = hp(4096, ge=256, help="BPE vocabulary size (tokenizer = bpe)")
    seq_len: int = hp(256, ge=8, help="tokens per packed example")
    max_response: int = hp(64, ge=1, help="response tokens kept")
    max_samples: Optional[int] = hp(None, ge=1, help="keep only the first records (None: all)")
    download: bool = hp(False, help="fetch databricks-dolly-15k with the datasets package if absent")

    default_partition: ClassVar[str] = "dirichlet"
    task: ClassVar[str] = "instruction"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, ("dolly",))
        path = first_found(tried, dolly_file)
        if path is None and download_requested(self.download):
            path = fetch_dolly(default_data_root() / "dolly")
        if path is None:
            raise missing("Dolly-15K", DOLLY_FILE, tried, "pass --dolly.download true (needs the datasets package)")
        records = read_jsonl(path, DOLLY_FIELDS)[: self.max_samples]
        categories = sorted({str(r["category"]) for r in records})
        prompts = [alpaca_prompt(str(r["instruction"]), str(r["context"])) for r in records]
        responses = [str(r["response"]) for r in records]
        tokenizer = tokenizer_for(self, prompts + responses)
        x = pack(tokenizer, prompts, responses, self.seq_len, self.max_response)
        y = np.asarray([categories.index(str(r["category"])) for r in records])
        return pooled("dolly", x, y, categories, None, tokenizer.get_vocab_size(), str(path))
