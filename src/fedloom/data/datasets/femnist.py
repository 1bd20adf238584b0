"""FEMNIST, LEAF's federated EMNIST (Caldas et al., 2018): 62 classes (digits, upper and lower case letters)
of 28x28 handwriting, one natural client per writer (3,550 writers in the full set).

Format: LEAF json produced by LEAF's ``data/femnist/preprocess.sh`` (e.g. ``-s niid --sf 0.05 -k 0 -t
sample``) from NIST Special Database 19: ``femnist/data/all_data/*.json`` (or ``train/`` + ``test/``), each
x a list of 784 floats in [0, 1] (white background = 1, as LEAF stores them), y in 0..61. There is no official
preprocessed download to verify, so fedloom reads user-supplied files only. x is scaled to [-1, 1] as
(v - 0.5)/0.5; writers are chosen as described in leaf.py.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir, check_labels, check_pairs, first_found, missing, search_dirs
from fedloom.data.datasets.leaf import (cap_samples, choose_users, leaf_dirs, leaf_json_files, natural_ids,
                                        read_leaf)
from fedloom.errors import DataError

CLASS_NAMES = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)


@DATASETS.register("femnist")
@dataclass(frozen=True)
class FEMNIST:
    """LEAF FEMNIST from user-supplied json; one natural client per writer."""

    users: Optional[int] = hp(None, ge=0, help="users kept (0: every user; None: as many as the run has clients)")
    min_user_samples: int = hp(1, ge=1, help="fewest samples a kept user has")
    max_user_samples: Optional[int] = hp(None, ge=1, help="most samples kept per user (None: all)")

    default_partition: ClassVar[str] = "natural"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, leaf_dirs("femnist"))
        files = first_found(tried, leaf_json_files)
        if files is None:
            check_given_dir(ctx.data_dir, "FEMNIST", "LEAF json files all_data/*.json (or train/ and test/)", tried)
            raise missing("FEMNIST", "LEAF json files all_data/*.json (or train/ and test/)", tried,
                          "clone https://github.com/TalwalkarLab/leaf and run data/femnist/preprocess.sh (it "
                          "downloads NIST SD19 and writes data/all_data/*.json); copy that data/ folder to "
                          "~/.cache/fedloom/femnist/data.")
        data = read_leaf(files)
        chosen = choose_users({u: len(y) for u, (_, y) in data.items()}, self.users, ctx.num_clients,
                              self.min_user_samples, ctx.seed, "writers")
        xs, ys = [], []
        for i, user in enumerate(chosen):
            keep = cap_samples(len(data[user][1]), self.max_user_samples, ctx.seed, i)
            xs.append(np.asarray([data[user][0][j] for j in keep], dtype=np.float32))
            ys.append(np.asarray([data[user][1][j] for j in keep]))
        return self._pooled(xs, ys, files[0].parent)

    def _pooled(self, xs: list[np.ndarray], ys: list[np.ndarray], where: object) -> PooledDataset:
        try:
            x = np.concatenate(xs).reshape(-1, 1, 28, 28)
        except ValueError as exc:
            raise DataError(f"{where}: FEMNIST samples must be 784 pixel values each ({exc})") from exc
        y = check_labels(np.concatenate(ys), 62, where)
        check_pairs(x, y, (1, 28, 28), where)
        return PooledDataset(
            name="femnist", x=torch.from_numpy((x - 0.5) / 0.5), y=torch.from_numpy(y), num_classes=62,
            natural_ids=natural_ids([len(v) for v in ys]), class_names=list(CLASS_NAMES), source=str(where),
        )  # fmt: skip
