"""A PFLlib dataset folder used as it is (Zhang et al., "PFLlib", JMLR 2025): ``--dataset pfllib --data-dir DIR
--partition-file DIR`` trains on PFLlib's own arrays and clients, whatever preprocessing produced them.

DIR holds PFLlib's ``config.json``, ``train/{i}.npz`` and ``test/{i}.npz`` (fedloom/data/partition_io.py). The
pooled dataset is every client's train samples, then every client's test samples, in client order; the
partition file (the same folder) maps each client back to its own samples. Float inputs become float32, integer
inputs (token ids) int64 with ``vocab_size`` = largest id + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.errors import ConfigError


@DATASETS.register("pfllib")
@dataclass(frozen=True)
class PFLlibFolder:
    """A PFLlib folder (config.json, train/, test/) from --data-dir, with its clients via --partition-file."""

    default_partition: ClassVar[str] = "file"

    def load(self, ctx: LoadContext) -> PooledDataset:
        from fedloom.data.partition_io import is_pfllib_folder, read_pfllib

        if ctx.data_dir is None or not is_pfllib_folder(Path(ctx.data_dir).expanduser()):
            raise ConfigError("--dataset pfllib reads a PFLlib folder (config.json, train/, test/): give it as "
                              "--data-dir DIR and --partition-file DIR")
        config, train, test = read_pfllib(Path(ctx.data_dir).expanduser())
        parts = train + test
        x = np.concatenate([p["x"] for p in parts])
        y = np.concatenate([p["y"] for p in parts]).astype(np.int64)
        tokens = np.issubdtype(x.dtype, np.integer)
        tensor = torch.from_numpy(x.astype(np.int64 if tokens else np.float32))
        classes = int(config.get("num_classes") or int(y.max()) + 1)
        return PooledDataset(name="pfllib", x=tensor, y=torch.from_numpy(y), num_classes=classes,
                             source=str(ctx.data_dir), vocab_size=int(x.max()) + 1 if tokens else None)
