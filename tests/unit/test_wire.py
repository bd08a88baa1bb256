"""Worked examples of the wire: canonical encoding, subjects, and the MessagePack batch codec."""

from __future__ import annotations

import math
import re
import struct

import msgpack
import pytest

from sync.crdt import (
    Counter,
    FieldChange,
    Op,
    ORSet,
    RecordState,
    Register,
    SetDelta,
    StorageValue,
    Version,
    fold,
)
from sync.entity import MergeKind
from sync.errors import SyncError
from sync.subjects import (
    HEARTBEAT_WILDCARD,
    HUB_OPS_STREAM,
    OPS_WILDCARD,
    SubjectFormatError,
    SubjectTokenError,
    ack_subject,
    audit_subject,
    check_token,
    down_consumer,
    down_stream,
    down_subject,
    enroll_subject,
    heartbeat_subject,
    inbox_prefix,
    ops_subject,
    parse_down_subject,
    parse_enroll_subject,
    parse_heartbeat_subject,
    parse_ops_subject,
    parse_region_node_subject,
    policy_subject,
    region_ops_wildcard,
    region_publish_subjects,
    region_subscribe_subjects,
)
from sync.transport.codec import (
    decode_batch,
    decode_orset,
    decode_state,
    encode_batch,
    encode_orset,
    encode_state,
    split_batches,
)
from sync.wire import (
    WIRE_VERSION,
    BatchHeaderMismatchError,
    BatchTooLargeError,
    MalformedBatchError,
    NotMessagePackError,
    OpBatch,
    OpTooLargeError,
    UnencodableValueError,
    UnsupportedWireVersionError,
    WireError,
    batch_from_tree,
    batch_to_tree,
    canonical,
    make_batch,
)

V = Version


def title(value: StorageValue, hlc: int = 1, node: str = "n1") -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, V(hlc, node)))


def ops(n: int, node: str = "n1", first: int = 1) -> list[Op]:
    return [
        Op("ticket", f"t{i}", node, first + i, 100 + i, {"title": title(f"v{i}", 100 + i, node)})
        for i in range(n)
    ]


EVERYTHING = Op(
    "ticket",
    "t1",
    "n1",
    7,
    2**64 - 1,
    {
        "title": title("𝄞 😀", 5),
        "none": title(None),
        "big": title(-(2**80)),
        "nan": title(math.nan),
        "zero": title(-0.0),
        "blob": title(b"\x00\xff"),
        "tags": FieldChange(
            MergeKind.SET,
            delta=SetDelta(add={"x": V(5, "n1")}, remove={"y": frozenset({V(1, "n2"), V(2, "n3")})}),
        ),
        "hits": FieldChange(MergeKind.COUNTER, counter=Counter({"n1": 3, "n2": 2**64 - 1})),
    },
    delete=True,
)

# --- canonical encoding --------------------------------------------------------------------------


def test_canonical_encoding_examples() -> None:
    assert canonical(None) == b"N"
    assert canonical(0) == b"I\x01\x00"
    assert canonical(-1) == b"I\x01\xff"
    assert canonical(255) == b"I\x02\x00\xff"
    assert canonical(True) == canonical(1)
    assert canonical(1.0) == b"F" + struct.pack(">d", 1.0)
    assert canonical("é") == b"S\x02\xc3\xa9"
    assert canonical("𝄞") == b"S\x04" + "𝄞".encode()
    assert canonical(b"ab") == b"B\x02ab"
    assert canonical(["a", 1]) == canonical(("a", 1)) == b"L\x02S\x01aI\x01\x01"


def test_canonical_sets_and_maps_are_sorted() -> None:
    assert canonical(frozenset({"b", "a"})) == canonical({"a", "b"}) == b"E\x02S\x01aS\x01b"
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})


def test_canonical_big_ints_and_long_strings_are_self_delimiting() -> None:
    assert canonical(2**200)[:2] == b"I\x1a"
    long = "x" * 300
    assert canonical(long)[:3] == b"S\xac\x02"  # LEB128 of 300
    assert canonical([long, 2**200]) == b"L\x02" + canonical(long) + canonical(2**200)


def test_canonical_float_rule() -> None:
    assert canonical(-0.0) == canonical(0.0)
    assert canonical(math.nan) == canonical(-math.nan) == b"F" + bytes.fromhex("7ff8000000000000")
    assert canonical(math.inf) != canonical(-math.inf)


def test_canonical_refuses_other_types() -> None:
    with pytest.raises(UnencodableValueError, match="cannot encode a complex"):
        canonical([1j])


# --- subjects ----------------------------------------------------------------------------------------


def test_subject_names() -> None:
    assert ops_subject("eu-west", "node-1") == "ec.ops.eu-west.node-1"
    assert region_ops_wildcard("eu-west") == "ec.ops.eu-west.*"
    assert down_subject("eu-west") == "ec.down.eu-west"
    assert heartbeat_subject("eu-west", "node-1") == "ec.hb.eu-west.node-1"
    assert ack_subject("eu-west", "node-1") == "ec.ack.eu-west.node-1"
    assert (OPS_WILDCARD, HEARTBEAT_WILDCARD) == ("ec.ops.>", "ec.hb.>")
    assert HUB_OPS_STREAM == "EC_OPS"
    assert down_stream("eu-west") == "EC_DOWN_eu-west"
    assert down_consumer("node-1") == "down-node-1"
    assert enroll_subject("eu-west") == "ec.enroll.eu-west"
    assert policy_subject("eu-west", "node-1") == "ec.policy.eu-west.node-1"
    assert audit_subject("eu-west", "node-1") == "ec.audit.eu-west.node-1"
    assert inbox_prefix("eu-west") == "_INBOX.eu-west"
    assert parse_region_node_subject("ec.audit.eu-west.node-1", "audit") == ("eu-west", "node-1")
    assert parse_enroll_subject("ec.enroll.eu-west") == "eu-west"


def test_every_region_subject_starts_with_the_region_token() -> None:
    """What makes per-region NATS permissions possible: a region's subjects name it first."""
    for subject in (*region_publish_subjects("eu-west"), *region_subscribe_subjects("eu-west")):
        assert subject.split(".")[2 if subject.startswith("ec.") else 1] == "eu-west", subject


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "it is empty"),
        ("eu.west", "'.'"),
        ("eu*", "'*'"),
        ("a>", "'>'"),
        ("eu west", "' '"),
        ("a\tb", "'\\t'"),
    ],
)
def test_bad_tokens_are_refused_by_name(token: str, problem: str) -> None:
    with pytest.raises(SubjectTokenError, match=re.escape(problem)) as info:
        ops_subject(token, "node-1")
    assert info.value.token == token
    assert info.value.what == "region"
    assert isinstance(info.value, SyncError)
    with pytest.raises(SubjectTokenError, match="node id"):
        ack_subject("eu-west", token)


def test_tokens_may_hold_other_characters() -> None:
    assert check_token("北京-1_a:b") == "北京-1_a:b"


def test_subjects_parse_back() -> None:
    assert parse_ops_subject("ec.ops.eu-west.node-1") == ("eu-west", "node-1")
    assert parse_heartbeat_subject(heartbeat_subject("r", "n")) == ("r", "n")
    assert parse_down_subject("ec.down.r") == "r"
    for bad in ("ec.ops.r", "ec.ops.r.n.x", "ec.hb.r.n", "xx.ops.r.n", "ec.ops..n", "ec.ops.*.n"):
        with pytest.raises(SubjectFormatError):
            parse_ops_subject(bad)


# --- batches ---------------------------------------------------------------------------------------------


def test_batch_round_trip_keeps_every_value_kind() -> None:
    batch = make_batch("eu-west", "n1", [EVERYTHING])
    decoded = decode_batch(encode_batch(batch))
    assert decoded == batch
    zero = decoded.ops[0].changes["zero"].register
    assert zero is not None
    assert isinstance(zero.value, float)
    assert math.copysign(1.0, zero.value) == -1.0  # the wire keeps the bits that were written


def test_the_wire_form_is_tagged_and_versioned() -> None:
    tree = msgpack.unpackb(encode_batch(make_batch("r", "n1", [EVERYTHING])))
    assert tree["version"] == WIRE_VERSION
    changes = tree["ops"][0]["changes"]
    assert changes["title"] == {"kind": "register", "value": "𝄞 😀", "version": [5, "n1"]}
    assert changes["big"]["bigint"] == (-(2**80)).to_bytes(11, "big", signed=True)
    assert changes["tags"] == {
        "kind": "set",
        "add": {"x": [5, "n1"]},
        "remove": {"y": [[1, "n2"], [2, "n3"]]},
    }
    assert changes["hits"] == {"kind": "counter", "counts": {"n1": 3, "n2": 2**64 - 1}}
    assert tree["ops"][0]["delete"] is True
    assert "restore" not in tree["ops"][0]


def test_unknown_keys_are_ignored_and_missing_flags_default() -> None:
    tree = batch_to_tree(make_batch("r", "n1", ops(1)))
    tree["future"] = {"anything": [1]}
    tree["ops"][0]["future"] = 1  # type: ignore[index] # a list of dicts
    decoded = decode_batch(msgpack.packb(tree))
    assert decoded == make_batch("r", "n1", ops(1))
    assert decoded.ops[0].delete is False


def test_a_newer_wire_version_is_refused_saying_so() -> None:
    tree = batch_to_tree(make_batch("r", "n1", ops(1)))
    tree["version"] = WIRE_VERSION + 1
    with pytest.raises(UnsupportedWireVersionError, match="newer than the newest this node knows") as info:
        decode_batch(msgpack.packb(tree))
    assert info.value.version == WIRE_VERSION + 1


def test_too_large_batches_are_refused_before_decoding() -> None:
    with pytest.raises(BatchTooLargeError, match="batch of 11 bytes exceeds the limit of 10 bytes"):
        decode_batch(b"\xc1" * 11, max_bytes=10)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", msgpack.packb({1: 2}), msgpack.packb(msgpack.ExtType(5, b"")), b"\x80\x80"],
)
def test_bytes_that_are_not_msgpack_are_refused(data: bytes) -> None:
    with pytest.raises(NotMessagePackError):
        decode_batch(data)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda t: t.pop("region"), "region"),
        (lambda t: t.update(first_seq="1"), "first_seq"),
        (lambda t: t.update(ops={}), "ops"),
        (lambda t: t["ops"][0].update(hlc=-1), "ops[0].hlc"),
        (lambda t: t["ops"][0].update(seq=True), "ops[0].seq"),
        (lambda t: t["ops"][0].update(delete="yes"), "ops[0].delete"),
        (lambda t: t["ops"][0]["changes"]["title"].update(kind="graph"), "ops[0].changes['title'].kind"),
        (lambda t: t["ops"][0]["changes"]["title"].update(version=[1]), "ops[0].changes['title'].version"),
        (lambda t: t["ops"][0]["changes"]["title"].update(value=[1]), "ops[0].changes['title'].value"),
        (lambda t: t["ops"][0]["changes"]["title"].pop("value"), "ops[0].changes['title'].value"),
        (lambda t: t["ops"][0].update(region=None, delete=True, restore=True), "ops[0]"),
        (lambda t: t.update(region="a.b"), "region"),
    ],
)
def test_ill_typed_keys_are_named(mutate: object, where: str) -> None:
    tree = batch_to_tree(make_batch("r", "n1", ops(1)))
    mutate(tree)  # type: ignore[operator] # a lambda
    with pytest.raises(MalformedBatchError) as info:
        decode_batch(msgpack.packb(tree))
    assert info.value.where == where


@pytest.mark.parametrize(
    ("header", "where"),
    [
        ({"node_id": "n2"}, "ops[0].origin"),
        ({"first_seq": 2}, "ops[0].seq"),
        ({"last_seq": 9}, "last_seq"),
        ({"first_seq": 0}, "first_seq"),
    ],
)
def test_ops_disagreeing_with_the_header_are_refused(header: dict[str, object], where: str) -> None:
    tree = {**batch_to_tree(make_batch("r", "n1", ops(2))), **header}
    with pytest.raises(BatchHeaderMismatchError) as info:
        decode_batch(msgpack.packb(tree))
    assert info.value.where == where


def test_gaps_and_empty_batches_are_refused() -> None:
    with pytest.raises(
        BatchHeaderMismatchError, match=r"ops\[1\].seq disagrees with its header: expected 2, got 3"
    ):
        OpBatch(WIRE_VERSION, "r", "n1", 1, 3, (ops(1)[0], ops(1, first=3)[0]))
    with pytest.raises(BatchHeaderMismatchError, match="at least one op"):
        OpBatch(WIRE_VERSION, "r", "n1", 1, 0, ())


def test_every_wire_error_is_a_sync_error() -> None:
    assert issubclass(WireError, SyncError)


def test_strings_that_cannot_be_utf8_are_refused_on_encode() -> None:
    with pytest.raises(UnencodableValueError):
        encode_batch(make_batch("r", "n1", [Op("ticket", "\ud800", "n1", 1, 1)]))


# --- splitting ---------------------------------------------------------------------------------------------


def test_split_respects_the_op_count() -> None:
    batches = split_batches("r", "n1", ops(25), max_ops=10)
    assert [(b.first_seq, b.last_seq) for b in batches] == [(1, 10), (11, 20), (21, 25)]
    assert split_batches("r", "n1", []) == []


def test_split_respects_the_byte_size() -> None:
    big = [Op("ticket", f"t{i}", "n1", i + 1, i, {"body": title("x" * 1000, i)}) for i in range(20)]
    batches = split_batches("r", "n1", big, max_bytes=5000)
    assert len(batches) > 1
    assert all(len(encode_batch(b)) <= 5000 for b in batches)
    assert [op for b in batches for op in b.ops] == big


def test_an_op_larger_than_a_batch_is_refused() -> None:
    with pytest.raises(OpTooLargeError, match="op n1/1 encodes to"):
        split_batches("r", "n1", [Op("ticket", "t", "n1", 1, 1, {"body": title("x" * 5000)})], max_bytes=1000)


def test_split_refuses_ops_of_another_origin_or_out_of_order() -> None:
    with pytest.raises(BatchHeaderMismatchError):
        split_batches("r", "n1", ops(2, node="n2"))
    with pytest.raises(BatchHeaderMismatchError):
        split_batches("r", "n1", list(reversed(ops(2))))


# --- stored states ----------------------------------------------------------------------------


def test_record_states_and_sets_round_trip() -> None:
    state = fold([EVERYTHING, Op("ticket", "t1", "n2", 1, 9, restore=True)])[("ticket", "t1")]
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(RecordState())) == RecordState()
    s = ORSet().add("a", V(1, "n")).add("b", V(2, "n")).remove("a")
    assert decode_orset(encode_orset(s)) == s
    with pytest.raises(WireError):
        decode_orset(msgpack.packb({"adds": {"a": [[1]]}}))


def test_hlcs_beyond_64_bits_are_refused() -> None:
    tree = batch_to_tree(make_batch("r", "n1", ops(1)))
    tree["ops"][0]["hlc"] = 2**64  # type: ignore[index] # a list of dicts
    with pytest.raises(MalformedBatchError) as info:
        batch_from_tree(tree)
    assert info.value.where == "ops[0].hlc"
