"""The dashboard's live feed: one background task samples the process once a second and pushes a snapshot.

Nothing here polls the HTTP API: the sampler reads the in-process objects (Engine.IO sessions, the hub, the
Prometheus counters) directly and emits to each dashboard of this process, plus the new messages of the channels
each dashboard watches (read from history, so watching never joins a channel or shows up in its presence).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from hub import Hub
from hub.errors import Unavailable
from integration import SocketObservers
from utils.background import Once, StartTask
from utils.connect_timeout import joined_a_namespace
from utils.metrics import MESSAGES_DELIVERED, MESSAGES_PUBLISHED, disconnect_race_counts
from utils.runtime_stats import thread_counts, uptime_seconds

log = logging.getLogger(__name__)

NAMESPACE = "/dashboard"
SAMPLE_INTERVAL = 1.0
# What one snapshot carries at most, so 1000 clients or channels cost the page a bounded DOM and the wire a bounded
# frame; the totals are always sent alongside.
MAX_CLIENT_ROWS = 200
MAX_FILTER_LENGTH = 100
MAX_CHANNEL_ROWS = 200
MAX_WATCHED_CHANNELS = 20
# Newest messages per watched channel per tick; at 100 events/s the page keeps up and older ones are skipped.
MAX_EVENTS_PER_TICK = 200
BACKLOG_ON_WATCH = 20

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# Which process a snapshot describes (several sit behind one load balancer with REDIS_URL).
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


def read_version() -> str:
    try:
        with _PYPROJECT.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def resident_memory_bytes() -> int | None:
    """VmRSS of this process from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def counter_total(counter: Counter) -> float:
    """A labelled counter summed over all its labels."""
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


class PerSecondRing:
    """Events counted into one-second buckets over the last minute, in bounded memory at any churn rate."""

    def __init__(self, seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[list[int]] = deque(maxlen=seconds)  # [second, count]
        self._seconds = seconds
        self._lock = threading.Lock()  # guards _buckets: Engine.IO handler threads add, the sampler reads

    def add(self) -> None:
        second = int(self._clock())
        with self._lock:
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += 1
            else:
                self._buckets.append([second, 1])

    def last_minute(self) -> int:
        cutoff = int(self._clock()) - self._seconds
        with self._lock:
            return sum(count for second, count in self._buckets if second > cutoff)


class ConnectionTally:
    """Counts Engine.IO connects and disconnects and remembers when each open session began.

    It observes the server's lifecycle (integration/observers.py), so it sees every session, however short,
    without another layer having to report them.
    """

    def __init__(self) -> None:
        self.connects = PerSecondRing()
        self.disconnects = PerSecondRing()
        # Guards _since (eio sid -> epoch seconds), written on connect/disconnect threads.
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}

    def install(self, observers: SocketObservers) -> None:
        observers.on_connect(self.connected)
        observers.on_disconnect(self.disconnected)

    def connected(self, eio_sid: str, environ: dict) -> None:
        with self._lock:
            self._since[eio_sid] = time.time()
        self.connects.add()

    def disconnected(self, eio_sid: str, reason: Any) -> None:
        with self._lock:
            known = self._since.pop(eio_sid, None) is not None
        if known:
            self.disconnects.add()

    def connected_since(self, eio_sid: str) -> float | None:
        with self._lock:
            return self._since.get(eio_sid)


class Watchers:
    """Which channels each dashboard connection watches (with the last offset sent to it), and the logins behind
    the connections (so a logout can end them)."""

    def __init__(self) -> None:
        # Guards both maps; dashboard connect/disconnect/watch handlers and the sampler run on different threads.
        self._lock = threading.Lock()
        self._sent: dict[str, dict[str, int | None]] = {}  # sid -> channel -> last offset sent (None: nothing yet)
        self._logins: dict[str, str] = {}
        self._client_filters: dict[str, str] = {}  # sid -> lower-case text the clients table is filtered by

    def join(self, sid: str, login_id: str) -> None:
        with self._lock:
            self._logins[sid] = login_id

    def leave(self, sid: str) -> None:
        with self._lock:
            self._logins.pop(sid, None)
            self._sent.pop(sid, None)
            self._client_filters.pop(sid, None)

    def filter_clients(self, sid: str, text: str) -> None:
        with self._lock:
            if sid in self._logins:
                self._client_filters[sid] = text.lower()

    def client_filter(self, sid: str) -> str:
        with self._lock:
            return self._client_filters.get(sid, "")

    def watch(self, sid: str, channels: tuple[str, ...]) -> bool:
        """Replace the channels `sid` watches (and from its first call on, send it snapshots); False if `sid` is
        no longer connected.

        Snapshots wait for this call because python-socketio acknowledges a connect only after the connect
        handler returns: an emit between the two would reach a client that does not know it is connected.
        """
        with self._lock:
            if sid not in self._logins:
                return False
            before = self._sent.get(sid, {})
            self._sent[sid] = {channel: before.get(channel) for channel in channels}
            return True

    def sent(self, sid: str, channel: str, offset: int) -> None:
        """Record what the sampler sent, unless the channel was unwatched meanwhile."""
        with self._lock:
            channels = self._sent.get(sid)
            if channels is not None and channel in channels:
                channels[channel] = offset

    def plan(self) -> list[tuple[str, str, int | None]]:
        """(sid, channel, last offset sent) for every watched channel of every dashboard."""
        with self._lock:
            return [(sid, channel, offset) for sid, channels in self._sent.items()
                    for channel, offset in channels.items()]

    def sids_of_login(self, login_id: str) -> list[str]:
        with self._lock:
            return [sid for sid, login in self._logins.items() if login == login_id]

    def by_login(self) -> dict[str, list[str]]:
        """Login id -> its dashboard connections."""
        with self._lock:
            logins: dict[str, list[str]] = {}
            for sid, login in self._logins.items():
                logins.setdefault(login, []).append(sid)
            return logins

    def sids(self) -> list[str]:
        """Every connected dashboard."""
        with self._lock:
            return list(self._logins)

    def audience(self) -> list[str]:
        """The dashboards that asked for snapshots (see watch())."""
        with self._lock:
            return list(self._sent)


def message_row(message: Any) -> dict[str, Any]:
    return {"channel": message.channel, "event": message.event, "data": message.data,
            "offset": message.offset, "id": message.id, "ts": message.ts}


class Sampler:
    """The one background task behind every dashboard: sample, emit a snapshot, emit watched channels' news."""

    TASK = "dashboard sampler"

    def __init__(self, socketio: Any, hub: Hub, tally: ConnectionTally, watchers: Watchers,
                 sub_of: Callable[[str], str | None] | None, start_task: StartTask,
                 login_revoked: Callable[[str], bool] = lambda login_id: False,
                 webhook_status: Callable[[], list[dict[str, Any]]] = list,
                 control_events: Callable[[], list[dict[str, Any]]] = list, streams: Any = None) -> None:
        self.socketio = socketio
        self.streams = streams  # SSE streams (blueprints/realtime/stream.py), counted and listed like sessions
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the sampler
        self.webhook_status = webhook_status  # per receiver: depth, oldest age, delivered, last error
        self.hub = hub
        self.tally = tally
        self.watchers = watchers
        self.sub_of = sub_of  # None: subs unknown (the table then shows none, not "anonymous")
        self.login_revoked = login_revoked
        # The user-level actions this instance applied lately (disconnects, unsubscribes, revocations).
        self.control_events = control_events
        self.version = read_version()
        self._start = Once()
        self._stop = threading.Event()
        self._last_counts: tuple[float, float, float] | None = None

    def ensure_started(self) -> None:
        """Start the task on the first dashboard connection: apps that never serve one never run it."""
        if self._start.claim():
            self._start_task(self.TASK, self.run, self.stop)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("dashboard sampler started")
        next_tick = time.monotonic()
        unavailable = False  # Redis is down: said once at WARNING, not every second with a traceback
        while not self._stop.is_set():
            try:
                self.tick()
                unavailable = False
            except Unavailable as exc:
                (log.debug if unavailable else log.warning)("dashboard sample skipped: %s", exc)
                unavailable = True
            # The task feeds every open dashboard: one bad sample must not end it; the next tick tries again.
            except Exception:
                log.exception("dashboard sample failed")
            next_tick += SAMPLE_INTERVAL
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
        log.info("dashboard sampler stopped")

    def end_revoked_logins(self) -> None:
        """Dashboards whose login logged out on another instance: the logout there could not reach them."""
        for login_id, sids in self.watchers.by_login().items():
            if self.login_revoked(login_id):
                for sid in sids:
                    self.socketio.server.disconnect(sid, namespace=NAMESPACE)
                log.info("dashboard connections of a logged-out login ended", extra={"reason": "logged_out"})

    def tick(self) -> None:
        self.end_revoked_logins()
        audience = self.watchers.audience()
        if not audience:
            self._rates()  # keep the rate baseline current for the next dashboard
            return
        snapshot = self.snapshot()
        clients = snapshot.pop("all_clients")
        # One emit per dashboard of this process, not one to the room: with REDIS_URL a room emit would reach the
        # dashboards of every instance, each then getting every instance's snapshot in turn. Each gets the rows
        # of the clients table that match its own filter.
        for sid in audience:
            wanted = self.watchers.client_filter(sid)
            rows = [row for row in clients if wanted in row["search"]] if wanted else clients
            table = {"client_rows": [{k: v for k, v in row.items() if k != "search"} for row in rows[:MAX_CLIENT_ROWS]],
                     "client_matches": len(rows)}
            self.socketio.emit("snapshot", {**snapshot, **table}, to=sid, namespace=NAMESPACE)
        self.emit_new_events()

    def _rates(self) -> tuple[float | None, float | None]:
        """Published and delivered per second since the previous tick (None on the first)."""
        now = time.monotonic()
        counts = (counter_total(MESSAGES_PUBLISHED), counter_total(MESSAGES_DELIVERED))
        last, self._last_counts = self._last_counts, (now, *counts)
        if last is None:
            return None, None
        elapsed = max(now - last[0], 1e-3)
        return round((counts[0] - last[1]) / elapsed, 1), round((counts[1] - last[2]) / elapsed, 1)

    def snapshot(self) -> dict[str, Any]:
        server = self.socketio.server
        manager = server.manager
        dashboard_sids = self.watchers.sids()
        dashboard_eio = {manager.eio_sid_from_sid(sid, NAMESPACE) for sid in dashboard_sids}
        by_transport = {"websocket": 0, "polling": 0, "sse": self.streams.count() if self.streams else 0}
        for eio_sid, session in list(server.eio.sockets.items()):
            if not session.closed and eio_sid not in dashboard_eio:
                by_transport["websocket" if session.upgraded else "polling"] += 1
        published_rate, delivered_rate = self._rates()
        channels = self.hub.channel_summaries()
        clients = self.client_rows()
        return {
            "time": time.time(),
            "version": self.version,
            "instance": INSTANCE,
            "uptime": uptime_seconds(),
            "threads": thread_counts(),
            "rss_bytes": resident_memory_bytes(),
            "clients": {**by_transport, "total": sum(by_transport.values()), "dashboards": len(dashboard_sids)},
            "connects_per_minute": self.tally.connects.last_minute(),
            "disconnects_per_minute": self.tally.disconnects.last_minute(),
            "disconnect_races": disconnect_race_counts(),
            "published_per_second": published_rate,
            "delivered_per_second": delivered_rate,
            "fanout": self.fanout_figures(),
            "webhooks": self.webhook_status(),
            "channels": sorted(channels, key=lambda c: (-c["subscribers"], c["channel"]))[:MAX_CHANNEL_ROWS],
            "channel_count": len(channels),
            "all_clients": clients,
            "subs_known": self.sub_of is not None,
            "control_events": self.control_events(),
            "client_count": len(clients),
        }

    def fanout_figures(self) -> dict[str, int]:
        """In flight now, and since start: items that failed and publishes refused (the same as in /metrics)."""
        stats = self.hub.fanout.stats()
        return {"pending": stats["pending"], "failed": stats["failed"], "refused": sum(self.hub.refusals().values())}

    def client_rows(self) -> list[dict[str, Any]]:
        """Realtime ('/') connections, and Engine.IO sessions that have joined no namespace yet (`joined` false:
        until CONNECT_TIMEOUT_SECONDS closes them, they hold capacity too), newest first, each with the text a
        table filter searches."""
        server = self.socketio.server
        rows = []
        for sid, eio_sid in list(server.manager.get_participants("/", None)):
            session = server.eio.sockets.get(eio_sid)
            if session is None or session.closed:
                continue
            rows.append(self._row(sid, eio_sid, session, self.sub_of(sid) if self.sub_of else None,
                                  sorted(self.hub.presence.channels_of(sid)), True))
        for eio_sid, session in list(server.eio.sockets.items()):
            if session.closed or joined_a_namespace(server, eio_sid):
                continue
            rows.append(self._row(eio_sid, eio_sid, session, None, [], False))
        for stream in self.streams.all() if self.streams else []:
            rows.append(self._with_search({"sid": stream.sid, "sub": stream.identity.sub, "transport": "sse",
                                           "channels": sorted(self.hub.presence.channels_of(stream.sid)),
                                           "since": round(stream.identity.since, 3), "joined": True}))
        rows.sort(key=lambda row: row["since"] or 0, reverse=True)
        return rows

    def _row(self, sid: str, eio_sid: str, session: Any, sub: str | None, channels: list[str],
             joined: bool) -> dict[str, Any]:
        transport = "websocket" if session.upgraded else "polling"
        return self._with_search({"sid": sid, "sub": sub, "transport": transport, "channels": channels,
                                  "since": self.tally.connected_since(eio_sid), "joined": joined})

    @staticmethod
    def _with_search(row: dict[str, Any]) -> dict[str, Any]:
        words = [row["sid"], row["sub"] or "", row["transport"], *row["channels"], "" if row["joined"] else "unjoined"]
        row["search"] = " ".join(words).lower()
        return row

    def emit_new_events(self) -> None:
        """Each dashboard gets what is new in its channels since its last tick; a new watcher the last few first."""
        latest: dict[str, int] = {}
        for sid, channel, sent in self.watchers.plan():
            if channel not in latest:
                latest[channel] = self.hub.history.latest(channel)
            newest = latest[channel]
            start = max(0, newest - BACKLOG_ON_WATCH) if sent is None else sent
            if newest > start:
                messages, _ = self.hub.history.since(channel, max(start, newest - MAX_EVENTS_PER_TICK))
                rows = [message_row(m) for m in messages]
                # Messages published since `newest` was read come along too; they count as sent.
                newest = max(newest, rows[-1]["offset"]) if rows else newest
                self.socketio.emit("events", {"channel": channel, "events": rows,
                                              "skipped": max(0, newest - start - len(rows))},
                                   to=sid, namespace=NAMESPACE)
            if sent != newest:
                self.watchers.sent(sid, channel, newest)
