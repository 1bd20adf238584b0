"""Shamir t-of-n secret sharing over the prime field GF(2^521 − 1) (Shamir, "How to Share a Secret", CACM 1979):
a secret s < 2^512 is the constant term of a random polynomial of degree t − 1; share j is the polynomial at
x = j; any t shares give s back by Lagrange interpolation at 0, fewer reveal nothing about it."""

from __future__ import annotations

import functools

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


def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange coefficients λ_i with f(0) = Σ λ_i f(x_i) for a polynomial of degree < len(xs). A server that
    reconstructs many secrets from shares held by the same clients computes them once."""
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(coefficients)


def reconstruct(shares: list[tuple[int, int]]) -> int:
    """The polynomial's value at 0 from distinct shares (as many as the threshold, or more)."""
    coefficients = _cached_coefficients(tuple(x for x, _ in shares))
    return sum(c * y for c, (_, y) in zip(coefficients, shares)) % PRIME


@functools.lru_cache(maxsize=64)
def _cached_coefficients(xs: tuple[int, ...]) -> tuple[int, ...]:
    return lagrange_at_zero(xs)
