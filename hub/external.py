"""Publish from any Python process (a job runner, a trading engine, a cron script) without going through HTTP.

The message takes exactly the path of one published to a web instance: the same checks, an offset from the
shared Redis history, and the live broadcast through python-socketio's Redis channel in the same atomic step,
so subscribers on every instance receive it once, in offset order, and can recover it with `since`.

    from hub.external import ExternalPublisher

    with ExternalPublisher.from_env() as publisher:          # REDIS_URL, REDIS_KEY_PREFIX, HISTORY_* ...
        message = publisher.publish("orders", "created", {"id": 42}, idempotency_key="order-42-created")
        print(message.offset, message.id, message.duplicate)

It also acts on users on every instance (see hub.users): `publisher.user_connections("alice")`,
`publisher.disconnect_user("alice", reason="banned")`, `publisher.unsubscribe_user("alice", "orders.eu")`,
`publisher.revoke_tokens(sub="alice")` or `revoke_tokens(jti=...)`.

Use the same REDIS_URL, REDIS_KEY_PREFIX, HISTORY_*, IDEMPOTENCY_WINDOW_SECONDS and TOKEN_MAX_TTL values as the web
instances. From a shell: `flask --app app publish CHANNEL EVENT JSON [--idempotency-key KEY]`,
`flask --app app users ...`, `flask --app app tokens revoke ...`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from config import SETTINGS, ConfigError
from hub.control import RedisControlBus
from hub.history import DEFAULT_IDEMPOTENCY_WINDOW, Message
from hub.hub import DEFAULT_MAX_PAYLOAD_BYTES, check_idempotency_key, check_message
from hub.redis_client import COMMAND_TIMEOUT, RedisKeys, connect
from hub.redis_history import CHANNEL_ROOM_PREFIX, Broadcast, RedisHistoryStore, Replicas
from hub.revocations import RedisRevocations
from hub.tokens import DEFAULT_MAX_TTL
from hub.users import UserControl
from utils.redis_urls import default_min_replicas

_FROM_ENV = ("REDIS_URL", "REDIS_MIN_REPLICAS", "REDIS_REPLICA_TIMEOUT_MS", "REDIS_KEY_PREFIX", "HISTORY_MAX_MESSAGES",
             "HISTORY_MAX_AGE", "MAX_PAYLOAD_BYTES",
             "IDEMPOTENCY_WINDOW_SECONDS", "TOKEN_MAX_TTL", "CONTROL_REPLY_TIMEOUT_MS")
DEFAULT_REPLY_TIMEOUT = 1.0


def history_for(
    redis_url: str,
    key_prefix: str,
    max_messages: int,
    max_age_seconds: float,
    idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    replicas: Replicas | None = None,
) -> RedisHistoryStore:
    """The Redis history every instance and publisher must share (same keys, bounds and broadcast target).

    `replicas` defaults to REDIS_MIN_REPLICAS's default for this URL with a 1 s wait."""
    keys = RedisKeys(key_prefix)
    broadcast = Broadcast(keys.socketio_channel, CHANNEL_ROOM_PREFIX)
    replicas = replicas or Replicas(default_min_replicas(redis_url), 1000)
    client = connect(redis_url, timeout=COMMAND_TIMEOUT + replicas.timeout_ms / 1000)
    return RedisHistoryStore(client, keys, max_messages, max_age_seconds, idempotency_window=idempotency_window,
                             broadcast=broadcast, replicas=replicas)


class ExternalPublisher:
    """A trusted publisher (like an API key holder): no grants are checked, limits and name rules are."""

    def __init__(
        self,
        redis_url: str,
        *,
        key_prefix: str = "signalboard",
        max_messages: int = 1000,
        max_age_seconds: float = 300.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        token_max_ttl: int = DEFAULT_MAX_TTL,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        replicas: Replicas | None = None,
    ) -> None:
        if not redis_url:
            raise ConfigError("REDIS_URL must be set to publish from outside the web instances")
        self.history = history_for(redis_url, key_prefix, max_messages, max_age_seconds, idempotency_window, replicas)
        self.max_payload_bytes = max_payload_bytes
        self._control = RedisControlBus(redis_url, self.history.keys, reply_timeout)
        revocations = RedisRevocations(self.history.client, self.history.keys)
        self.users = UserControl(self._control, revocations, max_ttl=token_max_ttl)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExternalPublisher:
        """Built from the same environment variables as the web instances (validated the same way)."""
        environ = os.environ if environ is None else environ
        return cls.from_config({s.name: s.parse(s.name, environ.get(s.name, s.default))
                                for s in SETTINGS if s.name in _FROM_ENV})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExternalPublisher:
        """Built from validated settings (an app's config, or what from_env parsed)."""
        return cls(
            config["REDIS_URL"],
            key_prefix=config["REDIS_KEY_PREFIX"],
            max_messages=config["HISTORY_MAX_MESSAGES"],
            max_age_seconds=config["HISTORY_MAX_AGE"],
            max_payload_bytes=config["MAX_PAYLOAD_BYTES"],
            idempotency_window=config["IDEMPOTENCY_WINDOW_SECONDS"],
            token_max_ttl=config["TOKEN_MAX_TTL"],
            reply_timeout=config["CONTROL_REPLY_TIMEOUT_MS"] / 1000,
            replicas=Replicas.from_config(config),
        )

    def publish(self, channel: str, event: str, data: Any, *, idempotency_key: str | None = None) -> Message:
        """Store and broadcast one message; returns it with its offset and id.

        Raises the hub's errors: InvalidChannel, InvalidEvent, InvalidPayload, PayloadTooLarge, and
        Unavailable when Redis cannot be reached: retry. If Redis failed in the middle of the command, the
        message may have been stored all the same: retried with the same `idempotency_key` (within
        IDEMPOTENCY_WINDOW_SECONDS, from any instance or publisher), it is stored and delivered once, and the
        retry returns the first message's offset, id and ts with `duplicate` set. Without a key, a retry can
        deliver it twice under two offsets.
        """
        check_message(channel, event, data, self.max_payload_bytes)
        key = check_idempotency_key(idempotency_key)
        return self.history.append_all([channel], event, data, idempotency_key=key)[0]

    # User-level control: the answers of POST /api/v1/users/... and /tokens/revoke (raise the hub's errors).

    def user_connections(self, sub: str) -> dict[str, Any]:
        """`{"sub", "connections": [{sid, instance, transport, channels, connected_since, ...}], ...}`."""
        return self.users.connections(sub)

    def disconnect_user(self, sub: str, reason: str | None = None, reconnect: bool = False) -> dict[str, Any]:
        """Every connection of `sub` gets `signalboard:disconnect` {reason, reconnect} and is disconnected."""
        return self.users.disconnect(sub, reason, reconnect)

    def unsubscribe_user(self, sub: str, channel: str) -> dict[str, Any]:
        """`sub` leaves `channel` everywhere; its tokens issued until now no longer grant it."""
        return self.users.unsubscribe(sub, channel)

    def revoke_tokens(self, *, sub: str | None = None, jti: str | None = None) -> dict[str, Any]:
        """Every token of `sub` issued until now, or the one token `jti`: refused from now on, holders disconnected."""
        return self.users.revoke(sub=sub, jti=jti)

    def close(self) -> None:
        self.history.client.close()
        self._control.close()

    def __enter__(self) -> ExternalPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
