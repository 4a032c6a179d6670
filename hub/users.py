"""User-level control for backends: list, disconnect, unsubscribe a user and revoke tokens, on every instance.

The same object serves the HTTP API, the `flask` commands and the Python publisher (hub.external): it checks the
input, records revocations in the shared store first (so a connect or refresh anywhere is refused from then on),
then sends the action over the control bus (hub.control) for each instance to apply to its own connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hub.channels import validate_channel
from hub.control import ControlBus, Replies
from hub.errors import InvalidPayload
from hub.revocations import Revocations, channel_key, jti_key, sub_key
from hub.tokens import check_jti, check_sub

REASON_MAX_LENGTH = 200
DEFAULT_REASON = "disconnected by the server"


def _reason(reason: object) -> str:
    if reason is None:
        return DEFAULT_REASON
    if not isinstance(reason, str) or not 1 <= len(reason) <= REASON_MAX_LENGTH:
        raise InvalidPayload(f"reason must be a string of 1 to {REASON_MAX_LENGTH} characters")
    return reason


def _count(replies: Replies, key: str) -> int:
    return sum(int(result.get(key, 0)) for result in replies.results)


class UserControl:
    def __init__(self, bus: ControlBus, revocations: Revocations, *, max_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.revocations = revocations
        self.max_ttl = max_ttl  # the longest a token lives, so the longest a revocation must be kept
        self._clock = clock

    def connections(self, sub: object) -> dict[str, Any]:
        """Every connection of `sub` on every instance (an unknown sub simply has none)."""
        sub = check_sub(sub)
        replies = self.bus.request({"action": "list", "sub": sub})
        rows = [row for result in replies.results for row in result.get("connections", [])]
        rows.sort(key=lambda row: (row.get("connected_since") or 0, row.get("sid", "")))
        return {"sub": sub, "connections": rows, **replies.coverage()}

    def disconnect(self, sub: object, reason: object = None, reconnect: object = False) -> dict[str, Any]:
        """Tell every connection of `sub` why (`signalboard:disconnect`), then disconnect it."""
        sub = check_sub(sub)
        reason = _reason(reason)
        if not isinstance(reconnect, bool):
            raise InvalidPayload("reconnect must be true or false")
        replies = self.bus.request({"action": "disconnect", "sub": sub, "reason": reason, "reconnect": reconnect})
        return {"sub": sub, "disconnected": _count(replies, "count"), **replies.coverage()}

    def unsubscribe(self, sub: object, channel: object) -> dict[str, Any]:
        """Take `channel` from `sub`: its connections leave it, and tokens issued until now no longer grant it."""
        sub = check_sub(sub)
        if channel is None:
            raise InvalidPayload("channel is required")
        channel = validate_channel(channel)
        self.revocations.revoke(channel_key(sub, channel), self.max_ttl)
        replies = self.bus.request({"action": "unsubscribe", "sub": sub, "channel": channel})
        return {"sub": sub, "channel": channel, "unsubscribed": _count(replies, "count"), **replies.coverage()}

    def revoke(self, sub: object = None, jti: object = None) -> dict[str, Any]:
        """Revoke every token of `sub` issued until now, or the one token `jti`; live holders are disconnected."""
        if (sub is None) == (jti is None):
            raise InvalidPayload("give exactly one of sub or jti")
        if sub is not None:
            sub = check_sub(sub)
            at = self.revocations.revoke(sub_key(sub), self.max_ttl)
            revoked: dict[str, Any] = {"sub": sub}
            action: dict[str, Any] = {"action": "revoke", "sub": sub, "before": at}
        else:
            jti = check_jti(jti)
            at = self.revocations.revoke(jti_key(jti), self.max_ttl)
            revoked = {"jti": jti}
            action = {"action": "revoke", "jti": jti}
        replies = self.bus.request(action)
        return {"revoked": revoked, "revoked_at": at, "kept_until": int(at + self.max_ttl),
                "disconnected": _count(replies, "count"), **replies.coverage()}
