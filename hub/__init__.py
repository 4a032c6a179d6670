"""Signalboard's realtime domain (channels, tokens, history, presence, limits), free of Flask and Socket.IO."""

from hub.errors import HubError
from hub.fanout import Delivery, FanoutQueue
from hub.history import HistoryStore, MemoryHistoryStore, Message
from hub.hub import Hub, SubscribeResult
from hub.presence import PresenceChange, PresenceRegistry
from hub.ratelimit import RateLimiter
from hub.tokens import Claims, TokenIssuer

__all__ = [
    "Claims",
    "FanoutQueue",
    "HistoryStore",
    "Hub",
    "HubError",
    "MemoryHistoryStore",
    "Message",
    "PresenceChange",
    "PresenceRegistry",
    "RateLimiter",
    "SubscribeResult",
    "TokenIssuer",
    "Delivery",
]
