"""Domain errors with a stable code and HTTP status, so HTTP and Socket.IO report them the same way."""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Base of every error the hub raises on purpose.

    `message` is shown to clients, so it must never contain secrets or internals.
    """

    code: str = "error"
    status: int = 400
    default_message: str = "request refused"
    default_retry_after: float | None = None

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        # Seconds after which the same request may succeed; only for transient refusals.
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body

    def to_ack(self) -> dict[str, Any]:
        """The Socket.IO ack for this error (utils/socketio_error_handler.py calls it)."""
        return {"ok": False, "error": self.to_dict()}


class InvalidChannel(HubError):
    code = "invalid_channel"
    default_message = "invalid channel name"


class InvalidEvent(HubError):
    code = "invalid_event"
    default_message = "invalid event name"


class InvalidPayload(HubError):
    code = "invalid_payload"
    default_message = "invalid payload"


class Unauthorized(HubError):
    """Missing or unusable credentials; `reason` says which (token_missing, token_expired...)."""

    code = "unauthorized"
    status = 401
    default_message = "authentication required"

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.reason:
            body["reason"] = self.reason
        return body


class Forbidden(HubError):
    code = "forbidden"
    status = 403
    default_message = "not allowed"


class NotFound(HubError):
    code = "not_found"
    status = 404
    default_message = "not found"


class Conflict(HubError):
    code = "conflict"
    status = 409
    default_message = "conflicts with the current state"


class AlreadySubscribed(Conflict):
    code = "already_subscribed"
    default_message = "already subscribed to this channel"


class TooManySubscriptions(Conflict):
    code = "too_many_subscriptions"
    default_message = "subscription limit per connection reached"


class PayloadTooLarge(HubError):
    code = "payload_too_large"
    status = 413
    default_message = "payload too large"


class RateLimited(HubError):
    """Too many requests; `retry_after` is how many seconds until one more would pass."""

    code = "rate_limited"
    status = 429
    default_message = "rate limit exceeded"
    default_retry_after = 1.0


class Unavailable(HubError):
    """Temporarily unable to accept work (e.g. the fan-out queue is saturated)."""

    code = "unavailable"
    status = 503
    default_message = "temporarily unavailable, retry shortly"
    default_retry_after = 1.0
