"""The hub's runtime objects, built once from validated config with the backends REDIS_URL chooses.

Without REDIS_URL everything lives in this process: MemoryHistoryStore, PresenceRegistry, and FanoutQueue, whose one
worker thread emits each message to its channel's room (hub/fanout.py -> blueprints/realtime/delivery.py). With it,
history, presence and delivery go through Redis (blueprints/realtime/redis_backends.py): the history store broadcasts
each message through python-socketio's Redis channel as it numbers it, and delivery runs in every instance's
message-queue listener (integration/redis_manager.py), not here. docs/architecture.md follows one publish through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from blueprints.realtime.auth_hook import AuthHook
from blueprints.realtime.delivery import SocketIODelivery
from blueprints.realtime.redis_backends import redis_backends
from hub import FanoutQueue, Hub, MemoryHistoryStore, PresenceRegistry, RateLimiter, TokenIssuer
from hub.backends import Backends
from hub.control import ControlBus, LocalControlBus, RedisControlBus
from hub.errors import InvalidPayload
from hub.events import EventSink
from hub.redis_client import RedisKeys
from hub.revocations import Revocations, revocations_for
from hub.users import UserControl
from utils.background import StartTask

EXTENSION_KEY = "hub"
# Readiness fails when the fan-out queue is this full: publishes are about to be refused with 503.
QUEUE_NEARLY_FULL = 0.9


@dataclass(frozen=True)
class HubServices:
    hub: Hub
    tokens: TokenIssuer
    client_limiter: RateLimiter | None  # None: unlimited
    api_limiter: RateLimiter | None
    allow_anonymous: bool
    backends: Backends
    # Logged-out dashboard logins, revoked tokens, tokens of a sub, channels of a sub; in Redis with REDIS_URL.
    revocations: Revocations
    control: ControlBus  # user-level actions to every instance (hub.control)
    users: UserControl
    auth_hook: AuthHook | None = None  # AUTH_HOOK_URL: asked about token-less connects and ungranted subscribes


def _limiter(rate: int, burst: int) -> RateLimiter | None:
    return RateLimiter(rate, max(burst, 1)) if rate > 0 else None


def control_for(config: Mapping[str, Any]) -> tuple[Revocations, LocalControlBus | RedisControlBus]:
    """The revocation store and control bus: in this process, or shared by every instance through REDIS_URL."""
    url, prefix = config["REDIS_URL"], config["REDIS_KEY_PREFIX"]
    revocations = revocations_for(url, prefix)
    if not url:
        return revocations, LocalControlBus()
    return revocations, RedisControlBus(url, RedisKeys(prefix), config["CONTROL_REPLY_TIMEOUT_MS"] / 1000)


def charge_channels(limiter: RateLimiter | None, key: str, body: Mapping[str, Any]) -> None:
    """A publish naming several `channels` counts as one publish per channel against the caller's rate limit (the
    request itself paid for one), so one event cannot multiply a connection's or a key's allowance by 100."""
    channels = body.get("channels")
    if limiter is None or not isinstance(channels, list) or len(channels) < 2:
        return  # one channel, unlimited, or not a list (the hub refuses it)
    if len(channels) > limiter.burst:
        raise InvalidPayload(f"at most {int(limiter.burst)} channels per publish: each counts against the rate "
                             "limit, whose burst is that size")
    limiter.check(key, len(channels) - 1)


def memory_backends(config: Mapping[str, Any], delivery: SocketIODelivery, start_task: StartTask) -> Backends:
    """Everything in this process; the fan-out worker starts with the first item it gets."""
    fanout = FanoutQueue(delivery, max_pending=config["FANOUT_QUEUE_SIZE"], start=start_task)
    presence = PresenceRegistry()
    # A channel someone is subscribed to keeps its numbering even when its messages have aged out.
    history = MemoryHistoryStore(config["HISTORY_MAX_MESSAGES"], config["HISTORY_MAX_AGE"],
                                 idempotency_window=config["IDEMPOTENCY_WINDOW_SECONDS"],
                                 in_use=lambda channel: presence.count(channel) > 0)
    return Backends(history=history, presence=presence, fanout=fanout, readiness_name="fanout",
                    readiness=lambda: fanout.readiness(QUEUE_NEARLY_FULL))


def build_services(config: Mapping[str, Any], server: Any, start_task: StartTask,
                   events: EventSink | None = None) -> HubServices:
    """The services of one app, on the python-socketio `server` it serves; the one place backends are chosen."""
    delivery = SocketIODelivery(server)
    if config["REDIS_URL"]:
        # `hub` is read when an instance is reaped, long after it is built just below.
        backends = redis_backends(config, server, delivery, start_task, reaped=lambda changes: hub.reaped(changes))
    else:
        backends = memory_backends(config, delivery, start_task)
    hub = Hub(
        backends.history,
        backends.presence,
        backends.fanout,
        max_payload_bytes=config["MAX_PAYLOAD_BYTES"],
        max_subscriptions=config["MAX_SUBSCRIPTIONS"],
        publish_wait=config["PUBLISH_WAIT_MS"] / 1000,
        anonymous_presence_subs=config["ANONYMOUS_PRESENCE_SUBS"],
        events=events,
    )
    revocations, control = control_for(config)
    return HubServices(
        hub=hub,
        tokens=TokenIssuer(config["SECRET_KEY"], max_ttl=config["TOKEN_MAX_TTL"]),
        client_limiter=_limiter(config["CLIENT_RATE_LIMIT"], config["CLIENT_RATE_BURST"]),
        api_limiter=_limiter(config["API_RATE_LIMIT"], config["API_RATE_BURST"]),
        allow_anonymous=config["ALLOW_ANONYMOUS"],
        backends=backends,
        revocations=revocations,
        control=control,
        users=UserControl(control, revocations, max_ttl=config["TOKEN_MAX_TTL"]),
        auth_hook=AuthHook(config["AUTH_HOOK_URL"], config["WEBHOOK_SECRET"],
                           timeout=config["AUTH_HOOK_TIMEOUT_MS"] / 1000,
                           cache_seconds=config["AUTH_HOOK_CACHE_SECONDS"]) if config["AUTH_HOOK_URL"] else None,
    )


def hub_services(app: Flask | None = None) -> HubServices:
    """The services of `app` (default: the current app)."""
    return (app or current_app).extensions[EXTENSION_KEY]
