"""Cache-affine routing for the model deployment, on Ray Serve's public request-router API.

A request goes to the replica that most recently served the longest prefix of its prompt (the
chained block hashes of affinity.py), so a conversation's next turn finds its history in that
replica's KV cache instead of evaluating it again. A session key (``user`` or ``x-session-id``)
pins a conversation outright, and a ``previous_response_id`` goes to the replica that stored that
response. Affinity gives way to load: a replica whose engine sequences are all busy and that has
``imbalance`` more requests than the least loaded one is passed over, and the request falls back
to power-of-two choices.

A conversation this router has not seen (its first turn, or a turn another ingress replica
routed) is placed by rendezvous hashing of its first turn over the live replicas: every ingress
replica computes the same placement with no shared state, and a replica's death moves only the
conversations it held. The table of prefixes this router has seen overrides that placement where
load moved a conversation; it lives in the process that calls the model deployment (the ingress),
so it outlives any model replica: a dead replica's entries stop matching and its conversations
are placed again among the live ones."""
from __future__ import annotations

import collections
import hashlib
import random
from typing import Any, Optional

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .affinity import AffinityKey
from .forwarding import ForwardedRequest

MAX_PREFIXES = 200_000   # block hashes remembered (~100 bytes each with their holders)
MAX_SESSIONS = 100_000
HOLDERS_PER_PREFIX = 4   # replicas remembered per block: a shared system prompt lives on many


def _key(pending: Optional[PendingRequest]) -> AffinityKey | None:
    if pending is None or not pending.args:
        return None
    request = pending.args[0]
    return request.key if isinstance(request, ForwardedRequest) else None


def _rendezvous(name: str, replicas: list[RunningReplica]) -> RunningReplica:
    def weight(r: RunningReplica) -> bytes:
        return hashlib.blake2b(f"{name}\x1f{r.replica_id.unique_id}".encode(), digest_size=8).digest()
    return max(replicas, key=weight)


class CacheAffinityRouter(RequestRouter):
    """``request_router_kwargs``: ``sequences`` (engine sequences per replica, when the replica
    has not reported them yet), ``imbalance`` (requests beyond the least loaded replica that a
    replica with no free sequence may have and still keep its conversations)."""

    def initialize_state(self, sequences: int = 1, imbalance: int = 2, **_: Any) -> None:
        self._default_sequences = max(1, int(sequences))
        self._imbalance = max(0, int(imbalance))
        self._prefixes: collections.OrderedDict[int, dict[ReplicaID, None]] = collections.OrderedDict()
        self._sessions: collections.OrderedDict[str, ReplicaID] = collections.OrderedDict()
        self._in_flight: dict[ReplicaID, int] = collections.defaultdict(int)
        self._routed: dict[str, ReplicaID] = {}

    # -- load ------------------------------------------------------------------------------------
    def _load(self, r: RunningReplica) -> int:
        cached = self.replica_queue_len_cache.get(r.replica_id)
        return max(self._in_flight.get(r.replica_id, 0), cached or 0)

    def _sequences(self, r: RunningReplica) -> int:
        stats = r.routing_stats or {}
        return int(stats.get("sequences") or self._default_sequences)

    def _acceptable(self, r: RunningReplica, least: int) -> bool:
        load = self._load(r)
        if load >= r.max_ongoing_requests:
            return False
        return load < self._sequences(r) or load - least <= self._imbalance

    # -- choosing --------------------------------------------------------------------------------
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> list[list[RunningReplica]]:
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True
        if not candidate_replicas:
            return []
        chosen = self._affine(candidate_replicas, _key(pending_request))
        rest = [r for r in candidate_replicas if chosen is None or r.replica_id != chosen.replica_id]
        fallback = random.sample(rest, min(2, len(rest)))
        return [[chosen], fallback] if chosen is not None else [fallback]

    def _affine(self, candidates: list[RunningReplica], key: AffinityKey | None) -> RunningReplica | None:
        """The replica the key prefers, if it can take the request; None: route by load."""
        if not key:
            return None
        by_id = {r.replica_id: r for r in candidates}
        least = min(self._load(r) for r in candidates)
        if key.replica is not None:
            # Only that replica stored the response this request continues: elsewhere it fails.
            owner = next((r for r in candidates if r.replica_id.unique_id == key.replica), None)
            if owner is not None and self._load(owner) < owner.max_ongoing_requests:
                return owner
        if key.session is not None:
            pinned = by_id.get(self._sessions.get(key.session)) or _rendezvous(key.session, candidates)
            if self._acceptable(pinned, least):
                return pinned
        return self._by_prefix(candidates, by_id, key, least)

    def _by_prefix(self, candidates: list[RunningReplica], by_id: dict[ReplicaID, RunningReplica],
                   key: AffinityKey, least: int) -> RunningReplica | None:
        """The longest known prefix that covers the first turn; else the conversation's own
        placement; else a shorter shared prefix (a system prompt other chats left somewhere)."""
        split = max(key.anchor, 0)
        for h in reversed(key.hashes[split:]):
            holder = self._holder(h, by_id, least)
            if holder is not None:
                return holder
        anchor = key.anchor_hash
        if anchor is not None:
            placed = _rendezvous(f"{anchor:x}", candidates)
            if self._acceptable(placed, least):
                return placed
        for h in reversed(key.hashes[:split]):
            holder = self._holder(h, by_id, least)
            if holder is not None:
                return holder
        return None

    def _holder(self, h: int, by_id: dict[ReplicaID, RunningReplica], least: int) -> RunningReplica | None:
        holders = self._prefixes.get(h)
        if not holders:
            return None
        live = [by_id[rid] for rid in holders if rid in by_id and self._acceptable(by_id[rid], least)]
        if not live:
            return None
        self._prefixes.move_to_end(h)
        return min(reversed(live), key=self._load)  # equally loaded: the most recent holder's cache is fresher

    # -- bookkeeping -----------------------------------------------------------------------------
    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        request_id = pending_request.metadata.internal_request_id
        if request_id not in self._routed:
            self._routed[request_id] = replica_id
            self._in_flight[replica_id] += 1
        key = _key(pending_request)
        if not key:
            return
        if key.session is not None:
            self._sessions[key.session] = replica_id
            self._sessions.move_to_end(key.session)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        for h in key.hashes:
            holders = self._prefixes.get(h)
            if holders is None:
                holders = self._prefixes[h] = {}
            holders.pop(replica_id, None)
            holders[replica_id] = None  # most recent last
            while len(holders) > HOLDERS_PER_PREFIX:
                del holders[next(iter(holders))]
            self._prefixes.move_to_end(h)
        while len(self._prefixes) > MAX_PREFIXES:
            self._prefixes.popitem(last=False)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        # Serve reports every request's end, also of requests a replica rejected (never routed
        # here) or that went to another replica on retry: only the routed one counts down.
        if self._routed.get(internal_request_id) == replica_id:
            del self._routed[internal_request_id]
            self._in_flight[replica_id] = max(0, self._in_flight[replica_id] - 1)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._in_flight.pop(replica_id, None)
