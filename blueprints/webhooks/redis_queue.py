"""The webhook queue in Redis: one stream of events for the cluster, one consumer group per receiver.

Each receiver's group is consumed by whichever instance holds its lease (a key with an expiry, renewed while the
instance delivers), so each event is sent by one instance and a channel's events keep their stream order. An
instance that dies (SIGKILL) stops renewing; once its lease expires another instance takes it and claims the dead
one's pending entries (XAUTOCLAIM) before reading new ones, so they are delivered, in order, by the survivor.
Behind Sentinel an event is handed over only once REDIS_MIN_REPLICAS replicas have it (WAIT), as a publish is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from blueprints.webhooks.queue import Pending, QueueStats
from hub.errors import Unavailable
from hub.redis_client import RedisKeys
from hub.redis_history import Replicas

log = logging.getLogger(__name__)

# Renew the lease if it is still ours. KEYS: lease. ARGV: owner, ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 2 or 0
"""


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class RedisWebhookQueue:
    def __init__(self, client: redis.Redis, keys: RedisKeys, targets: Sequence[str], *, owner: str,
                 lease_seconds: float, max_age_seconds: float, replicas: Replicas | None = None) -> None:
        self.client = client
        self.replicas = replicas or Replicas()
        self.owner = owner
        self.stream = f"{keys.prefix}:webhooks:events"
        self._lease_prefix = f"{keys.prefix}:webhooks:lease:"
        self.lease_ms = int(lease_seconds * 1000)
        # Entries older than this can only be given up on, so the stream is trimmed to it as it grows.
        self.keep_ms = int((max_age_seconds + 60) * 1000)
        self.targets = list(targets)
        self._renew = client.register_script(_RENEW)
        self._groups_ready = False
        # Where a missing group starts: '$' (a receiver added later starts with the events raised from then on),
        # '0' once Redis was found empty (everything in the new stream was raised since and is undelivered).
        self._group_start = "$"
        self._leading: set[str] = set()
        # Event id -> stream entry id of the last put, while its replicas have not confirmed it (only the pump puts).
        self._unconfirmed: dict[str, str] = {}
        self._confirm_key = f"{keys.prefix}:webhooks:confirm"

    def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for target in self.targets:
            try:
                self.client.xgroup_create(self.stream, target, id=self._group_start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def put(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        self._ensure_groups()
        # The head of `events` may be in the stream already: stored by a put that replicas did not confirm. If this
        # master has the last of them it has them all (replication keeps order); otherwise a failover lost them.
        stored = [self._unconfirmed.get(event["id"]) for event in events]
        last = next((entry for entry in reversed(stored) if entry), None)
        if last is not None and not self.client.xrange(self.stream, last, last):
            stored = [None] * len(events)
        fresh = [event for event, entry in zip(events, stored, strict=True) if entry is None]
        minid = f"{int(time.time() * 1000) - self.keep_ms}-0"
        pipe = self.client.pipeline(transaction=False)
        for event in fresh:
            pipe.xadd(self.stream, {"e": json.dumps(event, separators=(",", ":"))}, minid=minid, approximate=True)
        count, timeout = self.replicas.count, self.replicas.timeout_ms
        if count:
            if not fresh:  # WAIT covers this connection's writes up to its last one: make one
                pipe.set(self._confirm_key, self.owner)
            pipe.execute_command("WAIT", count, timeout)
        replies = pipe.execute()
        added = iter(replies)
        self._unconfirmed = {event["id"]: entry or next(added) for event, entry in zip(events, stored, strict=True)}
        if count and replies[-1] < count:
            # In the stream, but not known to survive a failover: the outbox keeps the events and puts them again.
            raise Unavailable(f"{replies[-1]} of {count} Redis replicas confirmed webhook events within {timeout} ms")
        self._unconfirmed = {}
        return []

    def _lead(self, target: str) -> bool:
        """Hold (or take) `target`'s lease; on taking it, claim what the previous holder left pending."""
        self._ensure_groups()
        result = self._renew(keys=[self._lease_prefix + target], args=[self.owner, self.lease_ms])
        if not result:
            self._leading.discard(target)
            return False
        if target not in self._leading:
            self._leading.add(target)
            claimed = self._claim_all(target)
            log.info("webhooks: this instance now delivers to %s (%d pending events taken over)", target, claimed)
        return True

    def _claim_all(self, target: str) -> int:
        start, claimed = "0-0", 0
        for _ in range(10_000):  # bounded: each round claims up to 1000
            start, entries, *_ = self.client.xautoclaim(self.stream, target, self.owner, min_idle_time=0,
                                                        start_id=start, count=1000)
            claimed += len(entries)
            if start == "0-0":
                break
        return claimed

    def _read(self, target: str, entry: str, count: int, block_ms: int | None) -> list[Pending]:
        try:
            # [[stream, [(entry id, {field: value} or None when trimmed), ...]]] with decode_responses
            reply: Any = self.client.xreadgroup(target, self.owner, {self.stream: entry}, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without our data (no persistence): recreate the groups; what it lost is lost.
            log.warning("webhooks: the Redis stream or its groups are gone (Redis restarted empty?); recreating")
            self._groups_ready = False
            self._group_start = "0"
            self._leading.clear()
            return []
        items: list[Pending] = []
        dead: list[str] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                if not fields:  # trimmed away while pending: past its age anyway
                    dead.append(entry_id)
                else:
                    items.append(Pending(entry_id, json.loads(fields["e"])))
        if dead:
            self.client.xack(self.stream, target, *dead)
        return items

    def batch(self, target: str, size: int, linger: float, wait: float) -> list[Pending]:
        give_up = time.monotonic() + wait
        if not self._lead(target):
            time.sleep(min(wait, self.lease_ms / 4000))
            return []
        items = self._read(target, "0", size, None)  # ours already: claimed, or read before a failed attempt
        while len(items) < size:
            now = time.monotonic()
            if items:
                until = items[0].ts + linger - time.time()
                if until <= 0:
                    break
            else:
                until = give_up - now
            until = min(until, give_up - now)
            if until <= 0:
                break
            items += self._read(target, ">", size - len(items), max(1, int(until * 1000)))
        return items

    def keep(self, target: str) -> bool:
        return self._lead(target)

    def ack(self, target: str, batch: Sequence[Pending]) -> None:
        if batch:
            self.client.xack(self.stream, target, *[item.key for item in batch])

    def stats(self, target: str) -> QueueStats:
        self._ensure_groups()
        try:
            group = next(g for g in self.client.xinfo_groups(self.stream) if g["name"] == target)
        except (StopIteration, redis.ResponseError):  # gone with a Redis that restarted empty: _read recreates it
            return QueueStats(0, 0.0)
        depth = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        oldest_id = None
        if group.get("pending"):
            summary = self.client.xpending(self.stream, target)
            oldest_id = summary.get("min")
        elif depth:
            after = self.client.xrange(self.stream, f"({group['last-delivered-id']}", "+", count=1)
            oldest_id = after[0][0] if after else None
        oldest = time.time() - _entry_ms(oldest_id) / 1000 if oldest_id else 0.0
        return QueueStats(depth, max(0.0, oldest))
