"""Models by name. Every model is a ``SplitModel``: a feature extractor ``body`` and a classifier ``head``.

Parameter names therefore start with ``body.`` or ``head.``, which is all a pFL method needs to know to keep
a head local (FedPer/FedRep) or share only the head (LG-FedAvg). Every module in this package is imported on
first use, so adding a model is adding one file.
"""

import importlib
import pkgutil

from fedloom.models.base import MODELS, SplitModel, build_model, default_model_for

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "SplitModel", "build_model", "default_model_for"]
