"""Prometheus metrics shared by every layer, defined once at import so repeated app factories reuse them.

Every name starts with `signalboard_`; counters gain `_total` in the exposition. Labels stay low-cardinality: values
that come from clients (channel namespaces, event names) pass through a `LabelCap`, so a client inventing names
cannot grow the series without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "signalboard"

# `*_created` timestamps double the series count and no dashboard of ours reads them.
disable_created_metrics()

DISCONNECT_RACES = Counter(
    f"{PREFIX}_disconnect_races",
    "Disconnected-session errors turned into quiet, correct responses, by kind",
    ["kind"],
)

DISCONNECT_RACE_KINDS = (
    "unknown_session",  # a polling request named a sid the server no longer knows
    "closed_session",  # a polling request named a sid whose socket is already closed
    "request_race",  # the socket closed between the guard's check and Engine.IO's own lookup
    "handler",  # a Socket.IO event handler hit a gone session (default error handler)
    "decorator",  # a decorated handler or background task hit a gone session
    "library",  # python-engineio/python-socketio logged a gone-session error of their own
    "send_to_closed",  # an emit addressed a client that had just gone
    "thread",  # a thread ended on a gone-session error outside any handler
    "connect_race",  # a namespace CONNECT met a session whose disconnect had already run (integration/lifecycle.py)
)
for _kind in DISCONNECT_RACE_KINDS:
    DISCONNECT_RACES.labels(_kind)  # so every kind is exported as 0 before its first race


def disconnect_race_counts() -> dict[str, int]:
    """Swallowed disconnect races by kind, for health bodies and the dashboard."""
    counts = dict.fromkeys(DISCONNECT_RACE_KINDS, 0)
    for metric in DISCONNECT_RACES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["kind"]] = int(sample.value)
    return counts


class LabelCap:
    """Lets the first `limit` distinct values through as label values; every later newcomer becomes `other`."""

    OTHER = "other"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()  # guards _seen

    def __call__(self, value: str) -> str:
        if value in self._seen:  # the common case, without the lock: sets are safe to read while another adds
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return self.OTHER
            self._seen.add(value)
            return value


# One cap per label set: names clients send can never crowd out the names the server emits, or channel namespaces.
_channel_namespaces = LabelCap(50)
_event_names = LabelCap(50)
_received_event_names = LabelCap(50)


def channel_namespace(channel: str) -> str:
    """The label for a channel: its part before the first '.' or ':' (`orders.eu` -> `orders`, `public:news` ->
    `public`), capped to 50 distinct values."""
    cut = min((i for i in (channel.find("."), channel.find(":")) if i >= 0), default=len(channel))
    return _channel_namespaces(channel[:cut] or "none")


def event_label(event: str) -> str:
    """The label for a Socket.IO event name the server emits, capped to 50 distinct values."""
    return _event_names(event)


def received_event_label(event: str) -> str:
    """The label for an event name a client sent (from a joined namespace), capped to 50 distinct values."""
    return _received_event_names(event)


OBSERVER_ERRORS = Counter(f"{PREFIX}_observer_errors", "Socket.IO lifecycle observers that raised (logged at ERROR; "
                          "the other observers and the library still ran), by lifecycle point", ["point"])
for _point in ("connect", "message", "disconnect", "emit"):
    OBSERVER_ERRORS.labels(_point)
CONNECTS = Counter(f"{PREFIX}_socketio_connects", "Engine.IO sessions opened, by the transport they opened with",
                   ["transport"])
DISCONNECTS = Counter(f"{PREFIX}_socketio_disconnects", "Engine.IO sessions closed, by reason", ["reason"])
DISCONNECT_REASONS = ("client_disconnect", "server_disconnect", "ping_timeout", "transport_close", "transport_error",
                      "slow_consumer", "connect_timeout")
for _transport in ("polling", "websocket"):
    CONNECTS.labels(_transport)
for _reason in DISCONNECT_REASONS:
    DISCONNECTS.labels(_reason)

EVENTS_RECEIVED = Counter(f"{PREFIX}_socketio_events_received", "Socket.IO events received from clients, by event",
                          ["event"])
EVENTS_SENT = Counter(f"{PREFIX}_socketio_events_sent", "Socket.IO emits this process made, by event "
                      "(one per emit call, however many clients it reaches)", ["event"])

MESSAGES_PUBLISHED = Counter(f"{PREFIX}_messages_published", "Messages accepted for a channel, by channel namespace",
                             ["channel_namespace"])
MESSAGES_DELIVERED = Counter(f"{PREFIX}_messages_delivered", "Messages handed to subscribed clients (one per "
                             "client reached), by channel namespace", ["channel_namespace"])
PUBLISH_DUPLICATES = Counter(f"{PREFIX}_publish_duplicates", "Publishes answered from an idempotency key the channel "
                             "had already seen (nothing stored or delivered), by channel namespace",
                             ["channel_namespace"])
FANOUT_LATENCY = Histogram(f"{PREFIX}_fanout_latency_seconds", "Time from a publish being accepted to its fan-out "
                           "emit", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                            2.5, 5.0))

HTTP_REQUESTS = Counter(f"{PREFIX}_http_requests", "HTTP requests answered by Flask routes (Socket.IO transport "
                        "requests are counted as sessions and events instead)", ["endpoint", "method", "status"])
DRAINED_SESSIONS = Counter(f"{PREFIX}_drained_sessions", "Sessions ended by a graceful shutdown: `asked` left when "
                           "told to, `forced` had to be closed, `left` ended with the process (no time to ask)",
                           ["outcome"])
for _outcome in ("asked", "forced", "left"):
    DRAINED_SESSIONS.labels(_outcome)


class RuntimeCollector(Collector):
    """Figures read at scrape time from the app this process serves (clients, thread budget, threads, drain).

    Registered once per process; `bind` points it at the current app's sources, so the last app a factory built
    (the only one in production) is the one reported.
    """

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], Any]] = {}

    def bind(self, *, clients: Callable[[], Mapping[str, int]], budget: Callable[[], Mapping[str, int]],
             threads: Callable[[], Mapping[str, int]], draining: Callable[[], bool]) -> None:
        self._sources = {"clients": clients, "budget": budget, "threads": threads, "draining": draining}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sources = self._sources
        if not sources:
            return
        clients = GaugeMetricFamily(f"{PREFIX}_connected_clients", "Open Engine.IO sessions by transport",
                                    labels=["transport"])
        for transport, count in sources["clients"]().items():
            clients.add_metric([transport], count)
        yield clients
        budget = GaugeMetricFamily(f"{PREFIX}_thread_budget", "The worker's thread budget (see /readyz): configured "
                                   "threads, reserve, session capacity and how they are spent", labels=["figure"])
        for figure, value in sources["budget"]().items():
            budget.add_metric([figure], value)
        yield budget
        threads = GaugeMetricFamily(f"{PREFIX}_threads", "Live threads: gunicorn's pool and all others",
                                    labels=["kind"])
        for kind, count in sources["threads"]().items():
            if kind != "total":
                threads.add_metric([kind], count)
        yield threads
        yield GaugeMetricFamily(f"{PREFIX}_draining", "1 while the process is shutting down gracefully",
                                value=1 if sources["draining"]() else 0)


RUNTIME = RuntimeCollector()
REGISTRY.register(RUNTIME)

WEBHOOK_EVENTS = Counter(f"{PREFIX}_webhook_events", "Webhook events by type and outcome: `queued` when raised, "
                         "`delivered` once a receiver accepted it (per receiver), `expired` when given up after "
                         "WEBHOOK_MAX_AGE_SECONDS, `overflow` when the memory queue was full", ["type", "outcome"])
WEBHOOK_FAILURES = Counter(f"{PREFIX}_webhook_failures", "Failed webhook POSTs by receiver and reason (`status` "
                           "for a non-2xx answer, `timeout`, `refused`, `error`)", ["url", "reason"])
WEBHOOK_LATENCY = Histogram(f"{PREFIX}_webhook_delivery_seconds", "Time from an event being raised to a receiver "
                            "accepting it", buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                                                     900.0, 3600.0))


class WebhookQueueCollector(Collector):
    """Queue depth and oldest pending age per receiver, from the figures each deliverer last read."""

    def __init__(self) -> None:
        self._source: Callable[[], Mapping[str, Any]] = dict

    def bind(self, source: Callable[[], Mapping[str, Any]]) -> None:
        """`source()` -> {display url: object with .depth and .oldest_age}."""
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(f"{PREFIX}_webhook_queue_depth", "Webhook events waiting for a receiver",
                                  labels=["url"])
        oldest = GaugeMetricFamily(f"{PREFIX}_webhook_oldest_pending_seconds", "Age of the oldest webhook event "
                                   "waiting for a receiver", labels=["url"])
        for url, stats in self._source().items():
            depth.add_metric([url], stats.depth)
            oldest.add_metric([url], stats.oldest_age)
        yield depth
        yield oldest


WEBHOOK_QUEUES = WebhookQueueCollector()
REGISTRY.register(WEBHOOK_QUEUES)


def count_duplicates(messages: Iterable[Any]) -> None:
    """Count the hub's answers that were duplicates (hub.history.Message.duplicate)."""
    for message in messages:
        if message.duplicate:
            PUBLISH_DUPLICATES.labels(channel_namespace(message.channel)).inc()


class FanoutCollector(Collector):
    """The fan-out's own counters (hub.fanout.Fanout.stats, hub.Hub.refusals), read at scrape time from the hub of the
    app this process serves, in memory and Redis mode alike."""

    def __init__(self) -> None:
        self._stats: Callable[[], Mapping[str, int]] | None = None
        self._refusals: Callable[[], Mapping[str, int]] | None = None

    def bind(self, *, stats: Callable[[], Mapping[str, int]], refusals: Callable[[], Mapping[str, int]]) -> None:
        self._stats, self._refusals = stats, refusals

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if self._stats is None or self._refusals is None:
            return
        stats = self._stats()
        yield CounterMetricFamily(f"{PREFIX}_fanout_failed", "Fan-out items that could not be carried out (memory: "
                                  "a send or subscription the worker failed; Redis: a subscription join that could "
                                  "not be placed); each is logged", value=stats["failed"])
        yield GaugeMetricFamily(f"{PREFIX}_fanout_pending", "Fan-out items in flight (memory: queued for the worker; "
                                "Redis: joins waiting for their marker)", value=stats["pending"])
        yield CounterMetricFamily(f"{PREFIX}_fanout_joins_delayed", "Subscribes refused at once (`unavailable`, "
                                  "retry_after 2 s) because earlier ones had waited 4 s for the message-queue "
                                  "listener (Redis mode: it is behind)", value=stats.get("delayed", 0))
        refused = CounterMetricFamily(f"{PREFIX}_publish_refused", "Publishes answered 503: `fanout_full` (the "
                                      "fan-out queue at FANOUT_QUEUE_SIZE; not stored), `store_unavailable` (Redis "
                                      "unreachable, or fewer than REDIS_MIN_REPLICAS confirmed in time: then it may "
                                      "be stored; retry with its idempotency key)", labels=["reason"])
        for reason, count in self._refusals().items():
            refused.add_metric([reason], count)
        yield refused


FANOUT = FanoutCollector()
REGISTRY.register(FANOUT)
