"""Packing small unsigned codes into bytes, so that a b-bit code costs b bits on the wire (b ∈ 1..8): a 4-bit
quantized upload is half a byte per value, a sign one bit."""

from __future__ import annotations

import numpy as np
import torch


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take: ceil(count·bits / 8)."""
    return (count * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes < 2^bits (any shape) → ceil(n·bits/8) uint8 bytes (little-endian bit order per code)."""
    flat = codes.reshape(-1).to(torch.uint8).cpu().numpy()
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return torch.from_numpy(np.packbits(planes.reshape(-1))).to(codes.device)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` codes, as uint8."""
    planes = np.unpackbits(packed.cpu().numpy())[:count * bits].reshape(count, bits)
    codes = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)
    return torch.from_numpy(codes).to(packed.device)
