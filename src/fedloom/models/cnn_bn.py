"""``cnn-bn``: FedAvgCNN (models/cnn.py) with a BatchNorm after each convolution, the model for FedBN (Li,
Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local Batch Normalization", ICLR
2021), whose CNNs put BN after every convolution.

conv5x5(32)-BN-ReLU-maxpool2, conv5x5(64)-BN-ReLU-maxpool2, flatten, fc(dim->512)-ReLU | head fc(512->C).
The BN layers are named ``bn1`` / ``bn2`` (parameters ``body.bn1.weight``, ``body.bn1.bias``, ...), the naming
convention FedBN (and PFLlib's FedBN, which keeps every parameter with "bn" in its name local) relies on.

Statistics: the BN layers normalise with the statistics of the batch they are given, in training and in
evaluation alike (``track_running_stats=False``). fedloom's models are pure functions of their parameters
(every engine calls them through ``torch.func.functional_call``), and running statistics would be a second,
mutable kind of state that the local-SGD loop, the state store and the vectorized engine do not carry. A client
is evaluated on batches of its own test split, so the statistics it normalises with are its own ones. No BN
after the fc layer: a last training batch of one sample (``drop_last=False``) has no batch variance there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from fedloom.config import check_fields, hp
from fedloom.models.base import MODELS, SplitModel
from fedloom.models.cnn import ChannelsLastConv2d, flat_features


def is_batch_norm(name: str) -> bool:
    """Whether a parameter belongs to a BatchNorm layer by the ``bn`` naming convention (a dotted segment
    starting with "bn": ``body.bn1.weight``), as PFLlib's FedBN decides it."""
    return any(part.startswith("bn") for part in name.split("."))


@MODELS.register("cnn-bn")
@dataclass(frozen=True)
class FedAvgCNNBatchNorm:
    feature_dim: int = hp(512, ge=1, help="width of the representation the head sees")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        dim = flat_features("cnn-bn", input_shape)
        channels = input_shape[0]
        body = nn.Sequential(OrderedDict([
            ("conv1", ChannelsLastConv2d(channels, 32, kernel_size=5)),
            ("bn1", nn.BatchNorm2d(32, track_running_stats=False)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(32, 64, kernel_size=5)),
            ("bn2", nn.BatchNorm2d(64, track_running_stats=False)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(dim, self.feature_dim)), ("relu3", nn.ReLU()),
        ]))
        return SplitModel(body, nn.Linear(self.feature_dim, num_classes), feature_dim=self.feature_dim)
