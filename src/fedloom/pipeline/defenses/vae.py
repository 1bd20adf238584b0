"""The small variational auto-encoder of Snowball's top-down election (Qin et al., AAAI 2024): an MLP trained on
differences of (sigmoid-squashed) updates; a candidate's reconstruction error against the admitted set scores how
much it looks like them. Everything random (initial weights, batch order, latent samples) comes from the
generator it is given, on CPU."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DifferenceVAE(nn.Module):
    """Encoder: 2 × (Linear + ReLU) to a mean and a softplus "log-variance" (as the official code has it, so the
    variance is at least 1); decoder: 3 Linear layers (ReLU, ReLU, sigmoid output)."""

    def __init__(self, input_dim: int, hidden: int, latent: int, generator: torch.Generator) -> None:
        super().__init__()
        self.encode1, self.encode2 = nn.Linear(input_dim, hidden), nn.Linear(hidden, hidden)
        self.mean, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decode1, self.decode2 = nn.Linear(latent, hidden), nn.Linear(hidden, hidden)
        self.decode3 = nn.Linear(hidden, input_dim)
        with torch.no_grad():
            for layer in self.children():  # Kaiming-normal weights (the official init), default-range biases
                fan_in = layer.weight.shape[1]
                layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                layer.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.encode2(F.relu(self.encode1(x))))
        return self.mean(h), F.softplus(self.logvar(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode3(F.relu(self.decode2(F.relu(self.decode1(z))))))

    def sample(self, mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + noise * torch.exp(0.5 * logvar)


def train_vae(vae: DifferenceVAE, data: torch.Tensor, epochs: int, batch_size: int,
              generator: torch.Generator, fused: bool = False) -> None:
    """Adam (default settings) on summed squared reconstruction error + KL, minibatches of shuffled rows of
    sigmoid(data), as the official code trains it. ``fused``: PyTorch's one-kernel Adam (same update rule, other
    rounding), which halves the cost on CPU, where the unfused Adam's passes over the two input-sized layers
    take most of a step."""
    x_all = torch.sigmoid(data.float())
    optimizer = torch.optim.Adam(vae.parameters(), fused=fused or None)  # None: PyTorch's default (unfused on CPU)
    vae.train()
    for _ in range(epochs):
        for batch in torch.randperm(x_all.shape[0], generator=generator).split(batch_size):
            x = x_all[batch]
            mean, logvar = vae.encode(x)
            recon = vae.decode(vae.sample(mean, logvar, generator))
            kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
            loss = F.mse_loss(recon, x, reduction="sum") + kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@torch.no_grad()
def reconstruction_error(vae: DifferenceVAE, data: torch.Tensor, samples: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Per row: summed squared error of the reconstruction of sigmoid(row), averaged over ``samples`` latent
    draws (the official recon_prob, batched)."""
    vae.eval()
    x = torch.sigmoid(data.float())
    mean, logvar = vae.encode(x)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(samples):
        total += ((vae.decode(vae.sample(mean, logvar, generator)) - x) ** 2).sum(dim=1).double()
    return total / samples
