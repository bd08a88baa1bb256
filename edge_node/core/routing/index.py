"""Indexes of routable agents, so choosing an agent never scans all of them."""

# Theory of operation
# -------------------
# Agents are filed in *pools* keyed (channel, skill, level, language):
#
#   (ch, skill, level, lang)   agents with exactly `level` in `skill` who speak `lang`
#   (ch, skill, level, None)   the same, whatever they speak (for contacts needing no language)
#   (ch, None, 0, lang)        every agent speaking `lang` (steps that waive the skill)
#   (ch, None, 0, None)        every agent on the channel
#
# An agent is a member of a pool of channel `ch` while it is routable on `ch`.
# The agents eligible for a contact at minimum level L are the members of at
# most five pools (levels L..5), which never share an agent, so "the best
# eligible agent" is the best of at most five pool tops.
#
# Each pool orders its members lazily, only for the strategies someone asks it
# about: binary heaps keyed (load, handled or 0, idle_since, seq) for longest
# idle and least contacts, and a sorted list of registration numbers for round
# robin. Heap entries are never updated in place: whenever an agent's keys or
# routability may change the index bumps its `version` and pushes fresh
# entries; an entry is live only while its version is the agent's and the agent
# is a member. Heaps are rebuilt from the members when stale entries outnumber
# live ones, so memory stays proportional to the members.
#
# Every pool also counts the slots of *staffed* agents (presence available,
# whether idle or busy), the capacity the expected-wait estimator divides by.

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort

from edge_node.core.routing.agents import AgentRecord, AgentState
from edge_node.core.routing.contacts import MAX_LEVEL, Channel
from edge_node.core.routing.queues import Strategy

PoolKey = tuple[Channel, str | None, int, str | None]
HeapEntry = tuple[int, int, float, int, int, str]  # load, handled|0, idle_since, seq, version, agent_id


class _Pool:
    __slots__ = ("idle", "members", "rotation", "staffed_slots", "thrifty")

    def __init__(self) -> None:
        self.members: dict[str, AgentRecord] = {}
        self.staffed_slots = 0
        self.idle: list[HeapEntry] | None = None  # longest idle
        self.thrifty: list[HeapEntry] | None = None  # least contacts
        self.rotation: list[int] | None = None  # round robin: sorted seqs of members


def _entry(agent: AgentRecord, *, count_handled: bool) -> HeapEntry:
    handled = agent.handled if count_handled else 0
    return (agent.total_load, handled, agent.idle_since, agent.seq, agent.version, agent.agent_id)


def _top(pool: _Pool, *, count_handled: bool) -> AgentRecord | None:
    heap = pool.thrifty if count_handled else pool.idle
    if heap is None:
        heap = [_entry(a, count_handled=count_handled) for a in pool.members.values()]
        heapq.heapify(heap)
        if count_handled:
            pool.thrifty = heap
        else:
            pool.idle = heap
    while heap:
        version, agent_id = heap[0][4], heap[0][5]
        agent = pool.members.get(agent_id)
        if agent is not None and agent.version == version:
            return agent
        heapq.heappop(heap)
    return None


def _push(pool: _Pool, agent: AgentRecord) -> None:
    for count_handled, heap in ((False, pool.idle), (True, pool.thrifty)):
        if heap is None:
            continue
        if len(heap) > 2 * len(pool.members) + 32:
            heap[:] = [_entry(a, count_handled=count_handled) for a in pool.members.values()]
            heapq.heapify(heap)
        else:
            heapq.heappush(heap, _entry(agent, count_handled=count_handled))


class AgentIndex:
    """Pools of routable agents, and the strategies' choice among them."""

    def __init__(self) -> None:
        self._pools: dict[PoolKey, _Pool] = {}
        self._keys: dict[str, dict[Channel, tuple[PoolKey, ...]]] = {}
        self._by_seq: dict[int, AgentRecord] = {}

    def add(self, agent: AgentRecord) -> None:
        """File a new agent (offline, so in no pool yet) and create its pools."""
        profile = agent.profile
        langs: tuple[str | None, ...] = (None, *sorted(profile.languages))
        keys: dict[Channel, tuple[PoolKey, ...]] = {}
        for ch in profile.capacity:
            ch_keys: list[PoolKey] = [(ch, None, 0, lang) for lang in langs]
            ch_keys += [(ch, skill, level, lang) for skill, level in profile.skills.items() for lang in langs]
            keys[ch] = tuple(ch_keys)
            for key in ch_keys:
                self._pools.setdefault(key, _Pool())
        self._keys[agent.agent_id] = keys
        self._by_seq[agent.seq] = agent
        self.refresh(agent)

    def refresh(self, agent: AgentRecord) -> None:
        """Re-file `agent` after anything that may change its routability or keys."""
        agent.version += 1
        staffed = agent.presence is AgentState.AVAILABLE
        indexed: set[Channel] = set()
        for ch, keys in self._keys[agent.agent_id].items():
            was, now = ch in agent.indexed, agent.routable(ch)
            slots = agent.profile.capacity[ch] * (int(staffed) - int(agent.staffed))
            if not (was or now or slots):
                continue
            for key in keys:
                pool = self._pools[key]
                pool.staffed_slots += slots
                if now:
                    if not was:
                        pool.members[agent.agent_id] = agent
                        if pool.rotation is not None:
                            insort(pool.rotation, agent.seq)
                    _push(pool, agent)
                elif was:
                    del pool.members[agent.agent_id]
                    if pool.rotation is not None:
                        del pool.rotation[bisect_left(pool.rotation, agent.seq)]
            if now:
                indexed.add(ch)
        agent.indexed, agent.staffed = frozenset(indexed), staffed

    def _pools_for(
        self, channel: Channel, skill: str, min_level: int | None, language: str | None
    ) -> list[tuple[int, _Pool]]:
        """(level, pool) of the pools a contact may draw from, highest level first; level 0 waives the skill."""
        if min_level is None:
            keys = [(channel, skill, level, language) for level in range(MAX_LEVEL, 0, -1)]
            keys.append((channel, None, 0, language))
        else:
            keys = [(channel, skill, level, language) for level in range(MAX_LEVEL, min_level - 1, -1)]
        return [(key[2], pool) for key in keys if (pool := self._pools.get(key)) is not None]

    def best(
        self,
        strategy: Strategy,
        *,
        channel: Channel,
        skill: str,
        min_level: int | None,
        language: str | None,
        rotation_after: int,
    ) -> AgentRecord | None:
        """The routable agent `strategy` picks for such a contact, or None if none is eligible.

        When the skill is waived (`min_level=None`) skilled agents are still preferred by
        skill_weighted; the other strategies draw from everyone speaking the language.
        """
        pools = self._pools_for(channel, skill, min_level, language)
        if min_level is None and strategy is not Strategy.SKILL_WEIGHTED:
            pools = [(level, pool) for level, pool in pools if level == 0]
        if strategy is Strategy.ROUND_ROBIN:
            return self._next_in_rotation([pool for _, pool in pools], rotation_after)
        if strategy is Strategy.SKILL_WEIGHTED:
            for _, pool in pools:
                if (agent := _top(pool, count_handled=False)) is not None:
                    return agent
            return None
        count_handled = strategy is Strategy.LEAST_CONTACTS
        tops = [a for _, pool in pools if (a := _top(pool, count_handled=count_handled)) is not None]
        return min(tops, key=lambda a: _entry(a, count_handled=count_handled), default=None)

    def _next_in_rotation(self, pools: list[_Pool], after: int) -> AgentRecord | None:
        rotations: list[list[int]] = []
        for pool in pools:
            if pool.rotation is None:
                pool.rotation = sorted(a.seq for a in pool.members.values())
            if pool.rotation:
                rotations.append(pool.rotation)
        following = [r[i] for r in rotations if (i := bisect_right(r, after)) < len(r)]
        seq = min(following, default=None)
        if seq is None:
            seq = min((r[0] for r in rotations), default=None)
        return None if seq is None else self._by_seq[seq]

    def staffed_slots(self, *, channel: Channel, skill: str, min_level: int | None, language: str | None) -> int:
        """Slots of staffed agents eligible for such a contact, whether busy or idle."""
        pools = self._pools_for(channel, skill, min_level, language)
        if min_level is None:
            pools = [(level, pool) for level, pool in pools if level == 0]
        return sum(pool.staffed_slots for _, pool in pools)
