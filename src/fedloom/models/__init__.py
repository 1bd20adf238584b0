"""Models by name. Every model is a ``SplitModel``: a feature extractor ``body`` and a classifier ``head``.

Parameter names therefore start with ``body.`` or ``head.``, which is all a pFL method needs to know to keep
a head local (FedPer/FedRep) or share only the head (LG-FedAvg).
"""

from fedloom.models.base import MODELS, SplitModel, build_model, default_model_for
from fedloom.models import cnn, logreg, mlp  # noqa: F401  (registration)

__all__ = ["MODELS", "SplitModel", "build_model", "default_model_for"]
