"""Indexes of routable agents, so choosing an agent never scans all of them."""

# Theory of operation
# -------------------
# Agents are filed, once, in *pools* keyed (channel, skill, level, language):
#
#   (ch, skill, level, lang)   agents with exactly `level` in `skill` who speak `lang`
#   (ch, skill, level, None)   the same, whatever they speak (for contacts needing no language)
#   (ch, None, 0, lang)        every agent speaking `lang` (steps that waive the skill)
#   (ch, None, 0, None)        every agent on the channel
#
# The agents eligible for a contact at minimum level L are those of at most
# five pools (levels L..5), which never share an agent, so "the best routable
# eligible agent" is the best of at most five pool tops.
#
# Each pool orders its routable agents lazily, only for the strategies someone
# asks it about: binary heaps keyed (load, handled or 0, idle_since, seq) for
# longest idle and least contacts, and a sorted list of registration numbers for
# round robin. Heap entries are never updated or removed in place: whenever an
# agent's routability or keys change, `refresh` bumps its `version` and pushes
# fresh entries into the heaps of the channels where it is routable now, so an
# entry is live exactly while its version is the agent's. A busy agent costs
# nothing to take out; its stale entries are popped when they reach the top, and
# a heap that grows past twice its pool is rebuilt, so work per change is
# proportional to the agent's own pools, never to the number of agents.
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
HeapEntry = tuple[int, int, float, int, int, AgentRecord]  # load, handled|0, idle_since, seq, version, agent


class _Pool:
    __slots__ = ("agents", "idle", "rotation", "staffed_slots", "thrifty")

    def __init__(self) -> None:
        self.agents: list[AgentRecord] = []  # everyone filed here, routable or not
        self.staffed_slots = 0
        self.idle: list[HeapEntry] | None = None  # longest idle
        self.thrifty: list[HeapEntry] | None = None  # least contacts
        self.rotation: list[int] | None = None  # round robin: sorted seqs of the routable


def _entry(agent: AgentRecord, *, count_handled: bool) -> HeapEntry:
    handled = agent.handled if count_handled else 0
    return (agent.total_load, handled, agent.idle_since, agent.seq, agent.version, agent)


def _fresh_heap(pool: _Pool, channel: Channel, *, count_handled: bool) -> list[HeapEntry]:
    heap = [_entry(a, count_handled=count_handled) for a in pool.agents if a.routable(channel)]
    heapq.heapify(heap)
    return heap


def _top(pool: _Pool, channel: Channel, *, count_handled: bool) -> AgentRecord | None:
    """The pool's best routable agent under the heap's key; entries of an older version are stale."""
    heap = pool.thrifty if count_handled else pool.idle
    if heap is None:
        heap = _fresh_heap(pool, channel, count_handled=count_handled)
        if count_handled:
            pool.thrifty = heap
        else:
            pool.idle = heap
    while heap:
        agent = heap[0][5]
        if agent.version == heap[0][4]:
            return agent
        heapq.heappop(heap)
    return None


class AgentIndex:
    """Pools of routable agents, and the strategies' choice among them.

    An agent's version changes at every `refresh`, and fresh heap entries are pushed only
    for channels where it is routable, so an entry whose version is the agent's is live.
    """

    def __init__(self) -> None:
        self._pools: dict[PoolKey, _Pool] = {}
        self._filed: dict[str, dict[Channel, tuple[_Pool, ...]]] = {}
        self._by_seq: dict[int, AgentRecord] = {}

    def add(self, agent: AgentRecord) -> None:
        """File a new agent (offline, so routable nowhere yet) in its pools."""
        profile = agent.profile
        langs: tuple[str | None, ...] = (None, *sorted(profile.languages))
        filed: dict[Channel, tuple[_Pool, ...]] = {}
        for ch in profile.capacity:
            keys: list[PoolKey] = [(ch, None, 0, lang) for lang in langs]
            keys += [(ch, skill, level, lang) for skill, level in profile.skills.items() for lang in langs]
            filed[ch] = tuple(self._pools.setdefault(key, _Pool()) for key in keys)
            for pool in filed[ch]:
                pool.agents.append(agent)
        self._filed[agent.agent_id] = filed
        self._by_seq[agent.seq] = agent
        self.refresh(agent)

    def refresh(self, agent: AgentRecord) -> None:
        """Re-file `agent` after anything that may change its routability or keys."""
        staffed = agent.presence is AgentState.AVAILABLE
        routable = tuple(ch for ch in agent.profile.capacity if agent.routable(ch))
        filed_as = (routable, staffed, agent.total_load, agent.handled, agent.idle_since)
        if filed_as == agent.filed_as:
            return  # nothing the pools know has changed (an accept, a request for the same presence)
        agent.filed_as = filed_as
        agent.version += 1
        indexed: set[Channel] = set()
        for ch, pools in self._filed[agent.agent_id].items():
            was, now = ch in agent.indexed, agent.routable(ch)
            if staffed != agent.staffed:
                slots = agent.profile.capacity[ch] * (1 if staffed else -1)
                for pool in pools:
                    pool.staffed_slots += slots
            if now:
                indexed.add(ch)
                for pool in pools:
                    self._push(pool, ch, agent)
            if now != was:
                for pool in pools:
                    if pool.rotation is None:
                        continue
                    if now:
                        insort(pool.rotation, agent.seq)
                    else:
                        del pool.rotation[bisect_left(pool.rotation, agent.seq)]
        agent.indexed, agent.staffed = frozenset(indexed), staffed

    @staticmethod
    def _push(pool: _Pool, channel: Channel, agent: AgentRecord) -> None:
        for count_handled, heap in ((False, pool.idle), (True, pool.thrifty)):
            if heap is None:
                continue
            if len(heap) > 2 * len(pool.agents) + 32:  # mostly stale: rebuild, amortised O(1) per push
                heap[:] = _fresh_heap(pool, channel, count_handled=count_handled)
            else:
                heapq.heappush(heap, _entry(agent, count_handled=count_handled))

    def _pools_for(
        self, channel: Channel, skill: str, min_level: int | None, language: str | None
    ) -> list[tuple[int, _Pool]]:
        """(level, pool) of the pools a contact may draw from, highest level first (0: skill waived)."""
        keys: list[PoolKey]
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
            return self._next_in_rotation([pool for _, pool in pools], channel, rotation_after)
        if strategy is Strategy.SKILL_WEIGHTED:
            for _, pool in pools:
                if (agent := _top(pool, channel, count_handled=False)) is not None:
                    return agent
            return None
        count_handled = strategy is Strategy.LEAST_CONTACTS
        tops = [a for _, pool in pools if (a := _top(pool, channel, count_handled=count_handled)) is not None]
        return min(tops, key=lambda a: _entry(a, count_handled=count_handled)[:4], default=None)

    def _next_in_rotation(self, pools: list[_Pool], channel: Channel, after: int) -> AgentRecord | None:
        rotations: list[list[int]] = []
        for pool in pools:
            if pool.rotation is None:
                pool.rotation = sorted(a.seq for a in pool.agents if a.routable(channel))
            if pool.rotation:
                rotations.append(pool.rotation)
        following = [r[i] for r in rotations if (i := bisect_right(r, after)) < len(r)]
        seq = min(following, default=None)
        if seq is None:
            seq = min((r[0] for r in rotations), default=None)
        return None if seq is None else self._by_seq[seq]

    def staffed_slots(
        self, *, channel: Channel, skill: str, min_level: int | None, language: str | None
    ) -> int:
        """Slots of staffed agents eligible for such a contact, whether busy or idle."""
        pools = self._pools_for(channel, skill, min_level, language)
        if min_level is None:
            pools = [(level, pool) for level, pool in pools if level == 0]
        return sum(pool.staffed_slots for _, pool in pools)
