"""The region key store: persistence, file custody, rotation, crypto-shredding, events, inventory."""

from __future__ import annotations

import base64
import itertools
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from security.envelope import FieldContext, InvalidKeyIdError, SealedValue, Sealer, open_value
from security.keys import (
    KekRotation,
    KeyEvent,
    KeyShreddedError,
    KeyStoreError,
    ShreddedKey,
    UnknownKeyError,
    key_fingerprint,
    keystore_path,
)
from security.keystore import KeyStore

REGION = "eu"
CTX = FieldContext(REGION, "customer", "C1", "name")


class Clock:
    def __init__(self) -> None:
        self._ticks = itertools.count(1_700_000_000_000)

    def __call__(self) -> int:
        return next(self._ticks)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return keystore_path(tmp_path / "data")


@pytest.fixture
def events() -> list[KeyEvent]:
    return []


@pytest.fixture
def store(path: Path, events: list[KeyEvent]) -> Iterator[KeyStore]:
    with KeyStore(path, region=REGION, wall_ms=Clock(), on_event=events.append) as keys:
        yield keys


def raw_files(path: Path) -> bytes:
    """Every byte of the database and its WAL as they are on disk now."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def stored_wraps(path: Path, key_id: str) -> list[bytes]:
    """The wrapped data key blobs of ``key_id``, read through a second connection."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT wrapped FROM wrapped_keys WHERE purpose = 'dek' AND key_id = ?", (key_id,)
        )
        return [bytes(w) for (w,) in rows]
    finally:
        conn.close()


def current_kek(store: KeyStore) -> bytes:
    (info,) = store.inventory().keks
    (kek,) = [k for k in store.key_material_for_audit() if key_fingerprint(k) == info.fingerprint_hex]
    return kek


# --- lifecycle and files -----------------------------------------------------------------------


def test_first_open_creates_kek_v1_and_the_pseudonym_key(store: KeyStore, events: list[KeyEvent]) -> None:
    assert store.kek_version == 1
    assert len(store.pseudonym_key()) == 32
    assert [(e.kind, e.key_id, e.version) for e in events] == [
        ("kek_created", "kek", 1),
        ("pseudonym_key_created", "pseudonym", 1),
    ]
    assert all(e.at_ms >= 1_700_000_000_000 for e in events)


def test_keys_persist_across_reopen(path: Path) -> None:
    reopened: list[KeyEvent] = []
    with KeyStore(path, region=REGION) as first:
        sealed = Sealer(first, REGION).seal(CTX, "customer:C1", "Alice")
        dek, pseudonym = first.data_key("customer:C1"), first.pseudonym_key()
    with KeyStore(path, region=REGION, on_event=reopened.append) as second:
        assert second.existing_data_key("customer:C1") == dek
        assert second.pseudonym_key() == pseudonym
        assert second.kek_version == 1
        assert Sealer(second, REGION).open(CTX, sealed) == "Alice"
    assert reopened == []


def test_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = keystore_path(tmp_path)
    old = os.umask(0)
    try:
        with KeyStore(path, region=REGION) as keys:
            keys.data_key("customer:C1")
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in (path.parent, path, path.with_name("keys.db-wal"), path.with_name("keys.db-shm"))
            }
    finally:
        os.umask(old)
    assert modes == {"keys": 0o700, "keys.db": 0o600, "keys.db-wal": 0o600, "keys.db-shm": 0o600}


def test_a_file_others_can_read_is_refused(path: Path) -> None:
    with KeyStore(path, region=REGION):
        pass
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match=r"keys\.db'.*grants group or others access \(mode 644\)"):
        KeyStore(path, region=REGION).open()


def test_a_file_of_another_region_is_refused(path: Path) -> None:
    with KeyStore(path, region=REGION):
        pass
    with pytest.raises(KeyStoreError, match="holds the keys of region 'eu', not 'us'"):
        KeyStore(path, region="us").open()


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not sqlite at all" * 100)
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match=str(path)):
        KeyStore(path, region=REGION).open()


def test_a_closed_store_says_so(path: Path) -> None:
    keys = KeyStore(path, region=REGION)
    with pytest.raises(KeyStoreError, match=r"is not open; call open\(\) first"):
        keys.data_key("customer:C1")
    keys.open()
    keys.close()
    keys.close()
    with pytest.raises(KeyStoreError, match="is not open"):
        keys.existing_data_key("customer:C1")


# --- data keys ---------------------------------------------------------------------------------


def test_data_key_is_created_once_and_then_returned(store: KeyStore, events: list[KeyEvent]) -> None:
    first = store.data_key("ticket:T9")
    assert (first.key_id, first.version) == ("ticket:T9", 1)
    assert store.data_key("ticket:T9") == first
    assert store.existing_data_key("ticket:T9", 1) == first
    assert store.data_key("ticket:T10") != first
    assert [e.key_id for e in events if e.kind == "data_key_created"] == ["ticket:T9", "ticket:T10"]


def test_existing_data_key_never_creates(store: KeyStore) -> None:
    with pytest.raises(UnknownKeyError, match="data key 'customer:C7' does not exist"):
        store.existing_data_key("customer:C7")
    store.data_key("customer:C7")
    with pytest.raises(UnknownKeyError, match="data key 'customer:C7' v2 does not exist"):
        store.existing_data_key("customer:C7", 2)
    assert store.inventory().data_keys_active == 1


def test_key_ids_must_fit_an_envelope(store: KeyStore) -> None:
    with pytest.raises(InvalidKeyIdError):
        store.data_key("")


def test_concurrent_callers_share_one_key(store: KeyStore, events: list[KeyEvent]) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: store.data_key("customer:C1"), range(64)))
    assert len({k.key for k in keys}) == 1
    assert [e.kind for e in events].count("data_key_created") == 1


def test_an_altered_wrap_is_reported(path: Path) -> None:
    with KeyStore(path, region=REGION) as keys:
        keys.data_key("customer:C1")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE wrapped_keys SET wrapped = zeroblob(48) WHERE purpose = 'dek'")
    conn.commit()
    conn.close()
    with KeyStore(path, region=REGION) as keys, pytest.raises(KeyStoreError, match="does not unwrap"):
        keys.existing_data_key("customer:C1")


def test_data_keys_and_the_pseudonym_key_are_stored_only_wrapped(store: KeyStore, path: Path) -> None:
    deks = [store.data_key(f"customer:C{i}").key for i in range(3)]
    raw = raw_files(path)
    assert current_kek(store) in raw  # the KEK is stored as is, so the search works
    for key in [*deks, store.pseudonym_key()]:
        assert key not in raw


def test_events_arrive_after_commit_and_outside_the_lock(path: Path) -> None:
    seen: list[tuple[str, bool, bool]] = []

    def on_event(event: KeyEvent) -> None:
        conn = sqlite3.connect(path)  # another connection sees only committed rows
        try:
            if event.key_id == "kek":
                rows = conn.execute("SELECT count(*) FROM keks WHERE version = ?", (event.version,))
            else:
                rows = conn.execute("SELECT count(*) FROM wrapped_keys WHERE key_id = ?", (event.key_id,))
            committed = rows.fetchone()[0] == 1
        finally:
            conn.close()
        answered: list[bool] = []
        caller = threading.Thread(target=lambda: answered.append(keys.is_shredded(event.key_id)))
        caller.start()
        caller.join(timeout=10)  # only waits this long if the store still held its lock
        seen.append((event.kind, committed, answered == [False]))

    keys = KeyStore(path, region=REGION, on_event=on_event)
    with keys:
        keys.data_key("customer:C1")
    assert seen == [
        ("kek_created", True, True),
        ("pseudonym_key_created", True, True),
        ("data_key_created", True, True),
    ]


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_rewraps_and_destroys_the_old_kek(
    store: KeyStore, path: Path, events: list[KeyEvent]
) -> None:
    sealer = Sealer(store, REGION)
    contexts = [FieldContext(REGION, "customer", f"C{i}", "name") for i in range(5)]
    sealed = [sealer.seal(ctx, f"customer:C{i}", f"name {i}") for i, ctx in enumerate(contexts)]
    pseudonym = store.pseudonym_key()
    old_kek = current_kek(store)
    old_wraps = stored_wraps(path, "customer:C0")
    assert old_kek in raw_files(path)  # the search below can find it

    rotation = store.rotate_kek(by="regional_admin:alice")

    assert rotation == KekRotation(old_version=1, new_version=2, rewrapped=5)
    assert store.kek_version == 2
    assert old_kek not in raw_files(path)
    assert stored_wraps(path, "customer:C0") != old_wraps
    assert old_kek not in store.key_material_for_audit()
    assert [k.version for k in store.inventory().keks] == [2]
    assert [sealer.open(ctx, s) for ctx, s in zip(contexts, sealed, strict=True)] == [
        f"name {i}" for i in range(5)
    ]
    assert store.pseudonym_key() == pseudonym
    last = events[-1]
    assert (last.kind, last.key_id, last.version) == ("kek_rotated", "kek", 2)
    assert dict(last.detail) == {"old_version": 1, "rewrapped": 5, "by": "regional_admin:alice"}


def test_rotated_keys_survive_reopen(path: Path) -> None:
    with KeyStore(path, region=REGION) as keys:
        sealed = Sealer(keys, REGION).seal(CTX, "customer:C1", "Alice")
        keys.rotate_kek()
        keys.rotate_kek()
    with KeyStore(path, region=REGION) as keys:
        assert keys.kek_version == 3
        assert Sealer(keys, REGION).open(CTX, sealed) == "Alice"
        assert len(keys.inventory().keks) == 1


# --- shredding ---------------------------------------------------------------------------------


def test_shred_makes_sealed_values_unreadable_for_good(
    store: KeyStore, path: Path, events: list[KeyEvent]
) -> None:
    sealer = Sealer(store, REGION)
    sealed = sealer.seal(CTX, "customer:C1", "Alice")
    other_ctx = FieldContext(REGION, "customer", "C2", "name")
    other = sealer.seal(other_ctx, "customer:C2", "Bob")
    dek = store.existing_data_key("customer:C1")
    (wrap,) = stored_wraps(path, "customer:C1")
    assert wrap in raw_files(path)  # the search below can find it

    assert store.shred("customer:C1", reason="erasure request E-17") is True

    raw = raw_files(path)
    assert dek.key not in raw
    assert wrap not in raw
    assert dek.key not in store.key_material_for_audit()
    with pytest.raises(KeyShreddedError) as info:
        sealer.open(CTX, sealed)
    assert info.value.key_id == "customer:C1"
    assert "customer:C1" in str(info.value)
    with pytest.raises(KeyShreddedError):
        store.data_key("customer:C1")
    with pytest.raises(KeyShreddedError):
        store.existing_data_key("customer:C1", 1)
    with pytest.raises(KeyShreddedError):
        sealer.seal(CTX, "customer:C1", "Alice again")
    assert open_value(dek, CTX, SealedValue.parse(sealed)) == "Alice"  # only a copy taken before could
    assert store.is_shredded("customer:C1")
    assert not store.is_shredded("customer:C2")
    assert sealer.open(other_ctx, other) == "Bob"
    last = events[-1]
    assert (last.kind, last.key_id, last.version) == ("data_key_shredded", "customer:C1", 1)
    assert dict(last.detail) == {"reason": "erasure request E-17", "existed": True}


def test_shredding_an_unknown_id_still_blocks_it(store: KeyStore, events: list[KeyEvent]) -> None:
    assert store.shred("customer:C404", reason="erasure before first contact") is False
    with pytest.raises(KeyShreddedError):
        store.data_key("customer:C404")
    assert dict(events[-1].detail) == {"reason": "erasure before first contact", "existed": False}


def test_shredding_twice_records_one_tombstone(store: KeyStore, events: list[KeyEvent]) -> None:
    store.data_key("customer:C1")
    assert store.shred("customer:C1", reason="first") is True
    assert store.shred("customer:C1", reason="second") is False
    assert [e.kind for e in events].count("data_key_shredded") == 1
    (tombstone,) = store.inventory().shredded
    assert tombstone == ShreddedKey("customer:C1", tombstone.shredded_at_ms, "first")


def test_shreds_survive_reopen(path: Path) -> None:
    with KeyStore(path, region=REGION) as keys:
        keys.data_key("customer:C1")
        keys.shred("customer:C1", reason="erasure")
    with KeyStore(path, region=REGION) as keys:
        assert keys.is_shredded("customer:C1")
        with pytest.raises(KeyShreddedError):
            keys.data_key("customer:C1")


# --- audit -------------------------------------------------------------------------------------


def test_inventory_counts_and_never_shows_key_bytes(store: KeyStore, path: Path) -> None:
    for i in range(3):
        store.data_key(f"customer:C{i}")
    store.shred("customer:C0", reason="erasure E-1")
    store.rotate_kek()
    inventory = store.inventory()
    assert inventory.region == REGION
    assert inventory.location == str(path)
    assert inventory.data_keys_active == 2
    assert inventory.data_keys_shredded == 1
    assert [(s.key_id, s.reason) for s in inventory.shredded] == [("customer:C0", "erasure E-1")]
    assert inventory.pseudonym_key_fingerprint == key_fingerprint(store.pseudonym_key())
    text = repr(inventory)
    material = store.key_material_for_audit()
    assert len(material) == 1 + 2 + 1  # KEK, two live data keys, the pseudonym key
    for key in material:
        for form in (
            str(key),
            key.hex(),
            base64.b64encode(key).decode(),
            base64.urlsafe_b64encode(key).decode(),
        ):
            assert form not in text


def test_fingerprints_are_short_and_domain_separated() -> None:
    key = bytes(32)
    assert len(key_fingerprint(key)) == 16
    assert key_fingerprint(key) != key_fingerprint(bytes([1]) * 32)
    assert bytes.fromhex(key_fingerprint(key)) not in key
