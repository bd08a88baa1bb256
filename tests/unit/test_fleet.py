"""The hub's fleet registry: registration, region claims, up/down, lag."""

from __future__ import annotations

import pytest

from cloud_hub.core.fleet import Fleet, Heartbeat, RegionClaimError, UnknownNodeError

T0 = 1_800_000_000_000  # ms


def beat(node: str = "n1", region: str = "eu-de", **kw: int | None) -> Heartbeat:
    fields: dict[str, object] = {
        "version": "1.0",
        "last_seq": 10,
        "acked_seq": 4,
        "backlog_ops": 6,
        "oldest_pending_hlc": (T0 - 3_000) << 16,
        "sent_at_ms": T0,
    }
    fields.update(kw)
    return Heartbeat(node_id=node, region=region, **fields)  # type: ignore[arg-type]  # test data


def test_first_heartbeat_registers_the_node_for_its_region() -> None:
    fleet = Fleet()
    fleet.heartbeat(beat(), now_ms=T0)
    assert fleet.knows("n1")
    assert fleet.region_of("n1") == "eu-de"
    assert fleet.regions() == ["eu-de"]


def test_a_known_node_cannot_claim_another_region() -> None:
    fleet = Fleet()
    fleet.heartbeat(beat(), now_ms=T0)
    with pytest.raises(RegionClaimError, match="registered for region 'eu-de', not 'cn-sh'"):
        fleet.heartbeat(beat(region="cn-sh"), now_ms=T0 + 1)
    assert fleet.region_of("n1") == "eu-de"


def test_unknown_nodes_have_no_region() -> None:
    with pytest.raises(UnknownNodeError, match="must send a heartbeat first"):
        Fleet().region_of("ghost")


def test_a_node_silent_past_the_limit_is_down_and_back_up_on_the_next_heartbeat() -> None:
    fleet = Fleet(down_after_s=10)
    fleet.heartbeat(beat(), now_ms=T0)
    assert fleet.as_json(T0 + 10_000)[0]["state"] == "up"
    assert fleet.as_json(T0 + 10_001)[0]["state"] == "down"
    fleet.heartbeat(beat(), now_ms=T0 + 20_000)
    assert fleet.as_json(T0 + 20_000)[0]["state"] == "up"


def test_lag_is_backlog_and_age_of_the_oldest_pending_operation() -> None:
    fleet = Fleet()
    fleet.heartbeat(beat(), now_ms=T0)
    row = fleet.as_json(T0 + 2_000)[0]
    assert row["backlog_ops"] == 6
    assert row["lag_s"] == pytest.approx(5.0)


def test_a_confirmation_shrinks_the_backlog_and_clears_the_lag_when_drained() -> None:
    fleet = Fleet()
    fleet.heartbeat(beat(), now_ms=T0)
    fleet.confirmed("n1", 10)
    row = fleet.as_json(T0)[0]
    assert (row["backlog_ops"], row["confirmed_seq"], row["lag_s"]) == (0, 10, 0.0)


def test_nodes_are_listed_by_region_then_id() -> None:
    fleet = Fleet()
    for node, region in (("b", "eu-de"), ("a", "eu-de"), ("c", "cn-sh")):
        fleet.heartbeat(beat(node=node, region=region), now_ms=T0)
    assert [(n["region"], n["node_id"]) for n in fleet.as_json(T0)] == [
        ("cn-sh", "c"),
        ("eu-de", "a"),
        ("eu-de", "b"),
    ]
