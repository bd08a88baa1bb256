"""ULIDs: 26 Crockford characters, time first, so ids sort by creation time."""

from __future__ import annotations

import pytest

from edge_node.ids import ulid

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
ZERO = bytes(10)
MS_2026 = 1_772_442_000_000  # 2026-03-02T09:00:00Z


def test_a_ulid_is_26_crockford_characters() -> None:
    value = ulid(MS_2026, bytes(range(10)))
    assert len(value) == 26
    assert set(value) <= CROCKFORD


def test_known_values() -> None:
    assert ulid(0, ZERO) == "0" * 26
    assert ulid(2**48 - 1, b"\xff" * 10) == "7" + "Z" * 25
    # The example in the ULID specification, taken apart into time and entropy.
    assert ulid(1_469_922_850_259, bytes.fromhex("d6764c61efb99302bd5b")) == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert ulid(0, b"\x00" * 9 + b"\x01") == "0" * 25 + "1"


def test_the_same_inputs_give_the_same_id() -> None:
    assert ulid(MS_2026, b"0123456789") == ulid(MS_2026, b"0123456789")


def test_ids_sort_by_time_whatever_the_entropy() -> None:
    times = [0, 1, 31, 32, 999, 1_000, 2**40, MS_2026 - 1, MS_2026, MS_2026 + 1, 2**48 - 1]
    ids = [ulid(ms, bytes([255 - i] * 10)) for i, ms in enumerate(times)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_within_one_millisecond_ids_sort_by_entropy() -> None:
    entropies = [bytes(10), b"\x00" * 9 + b"\x01", b"\x01" + b"\x00" * 9, b"\xff" * 10]
    ids = [ulid(MS_2026, e) for e in entropies]
    assert ids == sorted(ids)


@pytest.mark.parametrize("size", [0, 9, 11, 16])
def test_entropy_must_be_10_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=rf"^a ULID needs 10 bytes of entropy, got {size}$"):
        ulid(MS_2026, bytes(size))


@pytest.mark.parametrize("ms", [-1, 2**48, 2**64])
def test_timestamp_must_fit_48_bits(ms: int) -> None:
    with pytest.raises(ValueError, match=rf"^timestamp {ms} ms does not fit a ULID's 48 bits$"):
        ulid(ms, ZERO)
