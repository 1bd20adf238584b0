"""Shamir t-of-n secret sharing over the prime field GF(2^521 − 1) (Shamir, "How to Share a Secret", CACM 1979):
a secret s < 2^512 is the constant term of a random polynomial of degree t − 1; share j is the polynomial at
x = j; any t shares give s back by Lagrange interpolation at 0, fewer reveal nothing about it."""

from __future__ import annotations

import numpy as np

PRIME = 2 ** 521 - 1  # a Mersenne prime: 32-byte keys and seeds fit with room to spare
SHARE_BYTES = 66  # one field element on the wire (521 bits)


def _random_element(rng: np.random.Generator) -> int:
    return int.from_bytes(rng.bytes(SHARE_BYTES), "big") % PRIME


def split(secret: int, n: int, t: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n shares (x, y), x = 1..n, of which any t reconstruct ``secret``."""
    if not 1 <= t <= n:
        raise ValueError(f"threshold {t} must be in 1..{n}")
    if not 0 <= secret < PRIME:
        raise ValueError("secret outside the field")
    coefficients = [secret] + [_random_element(rng) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coefficients):  # Horner's rule
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def reconstruct(shares: list[tuple[int, int]]) -> int:
    """The polynomial's value at 0 from distinct shares (as many as the threshold, or more)."""
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret
