"""Record ids: ULIDs, so ids sort by creation time and pagination needs no second key."""

from __future__ import annotations

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int, entropy: bytes) -> str:
    """A 26-character ULID from a millisecond timestamp and 10 random bytes.

    The caller supplies time and randomness, so the function is pure and ids
    in tests are reproducible.
    """
    if len(entropy) != 10:
        raise ValueError(f"a ULID needs 10 bytes of entropy, got {len(entropy)}")
    if not 0 <= now_ms < 2**48:
        raise ValueError(f"timestamp {now_ms} ms does not fit a ULID's 48 bits")
    value = (now_ms << 80) | int.from_bytes(entropy, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))
