"""Lifecycle events (connections, subscriptions, occupancy, presence, client publishes) raised as plain values.

The hub and the namespace raise them; whoever listens (the webhook outbox) decides what to do with them. Raising
never blocks and never does I/O, so it is safe on any request or handler thread.
"""

from __future__ import annotations

from typing import Any, Protocol

EVENT_TYPES = (
    "connection.opened",
    "connection.closed",
    "subscription.created",
    "subscription.removed",
    "channel.occupied",
    "channel.vacated",
    "presence.joined",
    "presence.left",
    "message.published",
)


class EventSink(Protocol):
    """Where lifecycle events go: `raise_event("channel.occupied", channel="orders")`."""

    def wants(self, event_type: str) -> bool:
        """False when nobody listens for this type, so callers can skip building its fields."""

    def raise_event(self, event_type: str, **fields: Any) -> None:
        """Hand one event over; must return at once."""


class NoEvents:
    """The sink when nothing listens (no WEBHOOK_URLS)."""

    def wants(self, event_type: str) -> bool:
        return False

    def raise_event(self, event_type: str, **fields: Any) -> None:
        return None
