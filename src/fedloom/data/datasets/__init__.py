"""Dataset loaders. Importing this package imports every module in it, which registers each loader in
``fedloom.data.base.DATASETS``; adding a dataset is adding one file."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from fedloom.data.datasets.digits import Digits  # noqa: E402
from fedloom.data.datasets.fashion_mnist import FashionMNIST  # noqa: E402
from fedloom.data.datasets.synthetic import Synthetic  # noqa: E402

__all__ = ["Digits", "FashionMNIST", "Synthetic"]
