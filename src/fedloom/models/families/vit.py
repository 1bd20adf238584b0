"""Vision Transformers (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) with torchvision's
parameter names and shapes (``conv_proj.weight``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_0.self_attention.in_proj_weight``, ``...mlp.0.weight``, ``encoder.ln.weight``),
less ``heads``, which HtFLlib (Zhang et al., KDD 2025) replaces by a pooling to the feature dimension (its ViT
head is then Linear(D, 768)-Tanh-Linear(768, C), see heads.py). HtFLlib builds ``vit_b_16(image_size=32)`` and
``vit_b_32(image_size=32)``; smaller images (28x28) are zero-padded to the image size. Dropout is 0, as in
torchvision's default; attention is written out (the same maths as nn.MultiheadAttention with one packed
input projection) so that it runs under torch.func.vmap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fedloom.models.families.common import FeaturePool, PadTo, ToChannels

#: name -> (patch, layers, heads, hidden, mlp): torchvision's ViT-B/16, B/32, L/16 ... (B used by HtFLlib)
VARIANTS = {"vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
            "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096)}


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (packed ``in_proj``)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden, hidden))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * hidden))
        self.out_proj = nn.Linear(hidden, hidden)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = SelfAttention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(), nn.Identity(), nn.Linear(mlp, hidden))
        for layer in (self.mlp[0], self.mlp[3]):  # torchvision's MLPBlock initialisation
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, tokens: int, layers: int, heads: int, hidden: int, mlp: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, hidden).normal_(std=0.02))
        self.layers = nn.Sequential()
        for i in range(layers):
            self.layers.add_module(f"encoder_layer_{i}", EncoderBlock(hidden, heads, mlp))
        self.ln = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(x + self.pos_embedding))


class VisionTransformer(nn.Module):
    """The feature extractor: the class token's final representation (native width ``hidden``), pooled to
    ``feature_dim`` by ``heads``."""

    def __init__(self, variant: str, feature_dim: int, image_size: int = 32) -> None:
        super().__init__()
        patch, layers, heads, hidden, mlp = VARIANTS[variant]
        if image_size % patch:
            raise ValueError(f"{variant}: image_size {image_size} is not a multiple of the patch size {patch}")
        self.width = hidden
        self.prepare = nn.Sequential(ToChannels(3), PadTo(image_size))
        self.conv_proj = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / (3 * patch * patch)))
        nn.init.zeros_(self.conv_proj.bias)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.encoder = Encoder((image_size // patch) ** 2 + 1, layers, heads, hidden, mlp)
        self.heads = FeaturePool(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(self.prepare(x))
        x = x.flatten(2).transpose(1, 2)  # [B, patches, hidden]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])
