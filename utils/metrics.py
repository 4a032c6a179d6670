"""Prometheus metrics shared by every layer, defined once at import so repeated app factories reuse them."""

from __future__ import annotations

from prometheus_client import Counter

PREFIX = "signalboard"

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
