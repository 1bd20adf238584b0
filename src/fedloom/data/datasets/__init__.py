"""Dataset loaders. Importing this package registers every loader in ``fedloom.data.base.DATASETS``."""

from fedloom.data.datasets.digits import Digits
from fedloom.data.datasets.fashion_mnist import FashionMNIST
from fedloom.data.datasets.synthetic import Synthetic

__all__ = ["Digits", "FashionMNIST", "Synthetic"]
