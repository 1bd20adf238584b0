"""Every architecture a family can name, by label, as a builder ``(input_shape, feature_dim, vocab) -> body``
whose output is [B, feature_dim], and the heads of HtFLlib's BaseHeadSplit (Zhang et al., "HtFLlib", KDD 2025).
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from fedloom.errors import ConfigError
from fedloom.models.base import flat_size
from fedloom.models.families.cnns import HCNN, fedavg_cnn
from fedloom.models.families.common import check_image
from fedloom.models.families.googlenet import GoogLeNet
from fedloom.models.families.mobilenet import MobileNetV2
from fedloom.models.families.resnet import DEPTHS, ResNet
from fedloom.models.families.sequence import AmazonMLP, BiLSTM, FastText, MeanEmbed, Recurrent, Transformer
from fedloom.models.families.vit import VisionTransformer

Builder = Callable[[tuple[int, ...], int, Optional[int]], nn.Module]


def _image(name: str, make: Callable[[tuple[int, ...], int], nn.Module], min_size: int = 16) -> Builder:
    def build(shape: tuple[int, ...], dim: int, vocab: Optional[int]) -> nn.Module:
        check_image(name, shape, min_size)
        return make(tuple(shape), dim)
    return build


def _tokens(name: str, make: Callable[[int, int, int], nn.Module]) -> Builder:
    def build(shape: tuple[int, ...], dim: int, vocab: Optional[int]) -> nn.Module:
        if len(shape) != 1 or vocab is None:
            raise ConfigError(f"architecture '{name}' needs token sequences [L] with a vocabulary (a text dataset "
                              f"such as ag-news); this dataset has input shape {tuple(shape)}")
        return make(int(vocab), dim, int(shape[0]))
    return build


def _hcnn(convs: int, hidden: tuple[int, ...]) -> tuple[str, Builder]:
    """FedTGP's CNN(num_cov=convs, hidden_dims=hidden), labelled ``hcnn{convs}[-{width}...]``."""
    label = f"hcnn{convs}" + "".join(f"-{h}" for h in hidden)
    return label, _image(label, lambda s, d: HCNN(s, convs, hidden, d))


ARCHITECTURES: dict[str, Builder] = {
    "cnn": _image("cnn", fedavg_cnn),
    "googlenet": _image("googlenet", lambda s, d: GoogLeNet(d)),
    "mobilenet_v2": _image("mobilenet_v2", lambda s, d: MobileNetV2(d)),
    **{f"resnet{depth}": _image(f"resnet{depth}", lambda s, d, depth=depth: ResNet(depth, d)) for depth in DEPTHS},
    **{name: _image(name, lambda s, d, name=name: VisionTransformer(name, d)) for name in ("vit_b_16", "vit_b_32")},
    # FedTGP's HCNNs8: CNN(num_cov, hidden_dims) for num_cov in 1, 2 and hidden_dims [], [512], [1024], [1024, 512]
    **dict(_hcnn(c, hidden) for hidden in ((), (512,), (1024,), (1024, 512)) for c in (1, 2)),
    "fasttext": _tokens("fasttext", lambda v, d, L: FastText(v, d)),
    "text-logreg": _tokens("text-logreg", lambda v, d, L: MeanEmbed(v, d, None)),
    "lstm": _tokens("lstm", lambda v, d, L: Recurrent(v, d, "lstm")),
    "gru": _tokens("gru", lambda v, d, L: Recurrent(v, d, "gru")),
    "bilstm": _tokens("bilstm", lambda v, d, L: BiLSTM(v, d)),
    **{f"transformer-l{layers}-h{heads}": _tokens(f"transformer-l{layers}-h{heads}",
                                                  lambda v, d, L, a=layers, b=heads: Transformer(v, d, b, a, L))
       for layers in (1, 2, 4, 8, 16) for heads in (1, 2, 4, 8, 16)},
    **{"amazon-mlp" + "".join(f"-{h}" for h in hidden):
       (lambda s, d, v, hidden=hidden: AmazonMLP(flat_size(s), hidden, d))
       for hidden in ((), (200,), (500,), (1000, 500), (1000, 500, 200))},
}


def build_head(spec: str, feature_dim: int, num_classes: int) -> nn.Module:
    """``linear``: Linear(D, C). ``vit``: HtFLlib's ViT head Linear(D, 768)-Tanh-Linear(768, C). ``htc-512-256``
    etc.: HtFLlib's ``Head(hidden_dims=[512, 256])`` of the HtC families: Linear-ReLU layers from D through the
    hidden widths after the first (which is D) to C, with HtFLlib's ReLU after the last layer too (kept: it is
    the setting's definition; its logits are non-negative)."""
    if spec == "linear":
        return nn.Linear(feature_dim, num_classes)
    if spec == "vit":
        return nn.Sequential(nn.Linear(feature_dim, 768), nn.Tanh(), nn.Linear(768, num_classes))
    widths = [feature_dim] + [int(w) for w in spec.split("-")[2:]] + [num_classes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths, widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return HtcHead(nn.Sequential(*layers))


class HtcHead(nn.Module):
    """HtFLlib's ``Head``: its layers live in ``fc`` (parameter names ``head.fc.0.weight`` ...)."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(x)
