"""MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024): 10 classes of
40-sample 1-D signals made by transforming ten digit-like templates (padding, shear, translation,
correlated and i.i.d. noise).

Generated on the fly with the ``mnist1d`` package's own generator (``mnist1d.data.make_dataset`` with
``get_dataset_args``), never from its pickle download. With the defaults (5,000 samples, seed 42) this is the
official dataset (4,000 train + 1,000 test, pooled). The generator seeds numpy's and Python's global random
state; fedloom restores both afterwards. x is float32 [N, 40] (standardised by the generator).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.config import SEED_MAX, check_fields, hp
from fedloom.errors import DataError


def _generator() -> Any:
    try:
        from mnist1d import data as mnist1d_data
    except ImportError as exc:
        raise DataError("dataset 'mnist1d' needs the mnist1d package: `pip install mnist1d==0.0.2.post1` "
                        "(or `pip install fedloom[datasets]`)") from exc
    return mnist1d_data


@DATASETS.register("mnist1d")
@dataclass(frozen=True)
class MNIST1D:
    """MNIST-1D generated locally; ``seed`` 42 and 5,000 samples reproduce the official set."""

    num_samples: int = hp(5000, ge=10, help="samples generated")
    # the generator seeds numpy's legacy global RNG, which takes 32 bits
    seed: int = hp(42, ge=0, le=SEED_MAX, help="the generator's seed")
    shuffle_seq: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        gen = _generator()
        args = gen.get_dataset_args()
        args.num_samples, args.seed, args.shuffle_seq = self.num_samples, self.seed, self.shuffle_seq
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = gen.make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
        y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise DataError(f"mnist1d generator returned x {x.shape} and y {y.shape}; expected [N, 40] and [N]")
        return PooledDataset(name="mnist1d", x=torch.from_numpy(x), y=torch.from_numpy(y), num_classes=10,
                             class_names=[str(i) for i in range(10)], source="generated (mnist1d package)")
