"""A simulation of secure aggregation (Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017), with the real primitives:

* AdvertiseKeys: every client u draws an X25519 key pair (``cryptography``) and a self-mask seed b_u;
* ShareKeys: u splits its secret key and b_u into t-of-n Shamir shares, one per client;
* MaskedInputCollection: u sends y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) (mod 2^k), where x_u
  is its update in fixed point and s_uv = SHA-256(X25519(sk_u, pk_v)) is the seed the pair agreed on; the PRG is
  AES-256 in counter mode. Clients may drop out after ShareKeys;
* Unmasking: each survivor hands the server, for every other client, the share of b (a survivor) or of the
  secret key (a dropped client); with t of them the server removes the survivors' self masks and the dropped
  clients' pairwise masks, and is left with exactly Σ_{survivors} x_u (mod 2^k).

``Server`` only ever receives public keys, masked vectors and shares (never an x_u); ``Client`` holds the secrets.
Shares travel unencrypted in the simulation, but their bytes are counted as if authenticated-encrypted.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from fedloom.extras import require
from fedloom.pipeline.secagg import shamir

#: bytes the protocol adds per message besides the payload: two public keys (encryption and masking) per
#: client, and per encrypted share pair the sender/receiver ids, AEAD nonce and tag
PUBLIC_KEYS_BYTES = 2 * 32
SHARE_ENVELOPE_BYTES = 2 * 4 + 12 + 16


@functools.lru_cache(maxsize=None)
def _x25519() -> object:
    return require("cryptography.hazmat.primitives.asymmetric.x25519", "privacy", "--aggregator secagg")


@functools.lru_cache(maxsize=None)
def _ciphers() -> object:
    return require("cryptography.hazmat.primitives.ciphers", "privacy", "--aggregator secagg")


def prg(seed: bytes, size: int, bits: int) -> np.ndarray:
    """``size`` pseudo-random values in Z_{2^bits} from a 32-byte seed (AES-256-CTR keystream)."""
    ciphers = _ciphers()
    encryptor = ciphers.Cipher(ciphers.algorithms.AES(seed), ciphers.modes.CTR(bytes(16))).encryptor()
    stream = np.frombuffer(encryptor.update(bytes(8 * size)), dtype=np.uint64)
    return stream & np.uint64(2 ** bits - 1)


def agreed_seed(private_key: object, public_bytes: bytes) -> bytes:
    """The pair's mask seed: SHA-256 of the X25519 shared secret (both ends compute the same)."""
    x25519 = _x25519()
    shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(public_bytes))
    return hashlib.sha256(b"fedloom-secagg-mask" + shared).digest()


@dataclass
class Client:
    """One client's secrets in one round: key pair, self-mask seed, and the shares it received."""

    uid: int
    secret_key: bytes
    self_seed: bytes
    received: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def create(cls, uid: int, rng: np.random.Generator) -> "Client":
        return cls(uid, rng.bytes(32), rng.bytes(32))

    @property
    def private_key(self) -> object:
        return _x25519().X25519PrivateKey.from_private_bytes(self.secret_key)

    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    def share_keys(self, peers: list[int], t: int, rng: np.random.Generator) -> dict[int, tuple]:
        """ShareKeys: for each peer, its share of (b_u, sk_u)."""
        n = len(peers)
        b = shamir.split(int.from_bytes(self.self_seed, "big"), n, t, rng)
        sk = shamir.split(int.from_bytes(self.secret_key, "big"), n, t, rng)
        return {peer: (b[i], sk[i]) for i, peer in enumerate(peers)}

    def masked_input(self, x: np.ndarray, public_keys: dict[int, bytes], bits: int) -> np.ndarray:
        """y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)  (mod 2^bits)."""
        y = x + prg(self.self_seed, x.size, bits)
        private = self.private_key
        for v, pk in public_keys.items():
            if v == self.uid:
                continue
            mask = prg(agreed_seed(private, pk), x.size, bits)
            y = y + mask if v > self.uid else y - mask
        return y & np.uint64(2 ** bits - 1)

    def unmasking_shares(self, survivors: set[int], everyone: list[int]) -> dict[int, tuple[str, tuple[int, int]]]:
        """For every client: the share of its b (it survived; its own included, b is revealed anyway) or of its
        secret key (it dropped), never both."""
        return {v: ("b", self.received[v][0]) if v in survivors else ("sk", self.received[v][1]) for v in everyone}


@dataclass
class Server:
    """What the server holds: public keys, masked vectors and shares: enough for the sum, nothing per client."""

    bits: int
    threshold: int
    public_keys: dict[int, bytes] = field(default_factory=dict)

    def unmask(self, masked: dict[int, np.ndarray], shares: dict[int, dict[int, tuple[str, tuple[int, int]]]],
               everyone: list[int]) -> np.ndarray:
        """Σ_{u survived} x_u (mod 2^bits) from the masked vectors and ``shares`` (by survivor, then by owner)."""
        survivors = sorted(masked)
        if len(survivors) < self.threshold:
            raise ValueError(f"{len(survivors)} survivors, fewer than the threshold {self.threshold}")
        modulus_mask = np.uint64(2 ** self.bits - 1)
        total = np.zeros_like(next(iter(masked.values())))
        for u in survivors:
            total = total + masked[u]
        for owner in everyone:
            kind_shares = [shares[h][owner] for h in sorted(shares)][:self.threshold]  # any t survivors' will do
            if owner in masked:  # survived: remove its self mask
                b = shamir.reconstruct([s for kind, s in kind_shares if kind == "b"])
                total = total - prg(b.to_bytes(32, "big"), total.size, self.bits)
            else:  # dropped: its pairwise masks with every survivor stay in the sum; rebuild and remove them
                sk = shamir.reconstruct([s for kind, s in kind_shares if kind == "sk"])
                private = _x25519().X25519PrivateKey.from_private_bytes(sk.to_bytes(32, "big"))
                for u in survivors:
                    mask = prg(agreed_seed(private, self.public_keys[u]), total.size, self.bits)
                    # u added +mask for v > u, −mask for v < u (v = the dropped owner)
                    total = total - mask if owner > u else total + mask
        return total & modulus_mask


def client_upload_bytes(n: int, size: int, bits: int) -> int:
    """Bytes one client sends in a round: its public keys, n − 1 encrypted share pairs, the masked vector (k bits
    per coordinate), and n shares at unmasking."""
    share_pairs = (n - 1) * (2 * shamir.SHARE_BYTES + SHARE_ENVELOPE_BYTES)
    masked = (size * bits + 7) // 8
    unmasking = n * (shamir.SHARE_BYTES + 4)
    return PUBLIC_KEYS_BYTES + share_pairs + masked + unmasking
