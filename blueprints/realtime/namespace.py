"""Socket.IO namespace '/': token auth at connect, then subscribe/unsubscribe/publish acked with dicts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace

from blueprints.realtime.expiry import TokenExpiry, drop_ungranted, refreshed_claims
from blueprints.realtime.services import HubServices, charge_channels
from extensions import client_sid
from hub.channels import can_subscribe, validate_channel
from hub.errors import Forbidden, HubError, InvalidPayload, NotFound, Unauthorized, Unavailable
from hub.revocations import channel_revoked, token_revoked
from utils.background import StartTask
from utils.metrics import count_duplicates

log = logging.getLogger(__name__)

# How long a subscribe waits for the fan-out worker to replay its backlog and join it to the channel.
# Far above normal (milliseconds); reaching it means the worker is stuck, which readiness also reports.
ATTACH_TIMEOUT = 10.0
CLIENT_EVENTS = frozenset({"subscribe", "unsubscribe", "publish", "refresh_token"})


@dataclass(frozen=True)
class Identity:
    """Who a connection is: a token's claims, or an anonymous visitor (sub None, public channels only)."""

    sub: str | None
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    exp: int | None = None
    iat: int = 0
    jti: str | None = None
    since: float = field(default_factory=time.time)  # when the connection began (kept across refresh_token)


def authenticate(services: HubServices, auth: Any, headers: Any = None) -> Identity:
    """The identity for a connect's `auth` payload; raises Unauthorized with a reason (or Unavailable when the
    authorization hook cannot answer). Without a token, the hook (AUTH_HOOK_URL) decides, else ALLOW_ANONYMOUS."""
    if auth is not None and not isinstance(auth, dict):
        raise Unauthorized("auth must be an object like {\"token\": \"...\"}", reason="token_invalid")
    token = (auth or {}).get("token")
    if token in (None, "") and services.auth_hook is not None:
        answer = services.auth_hook.connect(headers or {}, auth)
        # Vouched for now: a later revocation of the sub or of one of its channels covers this identity too.
        return Identity(answer.sub, answer.channels, answer.publish, answer.exp, iat=int(time.time()))
    if token in (None, "") and services.allow_anonymous:
        return Identity(sub=None)
    claims = services.tokens.verify(token)
    return Identity(claims.sub, claims.channels, claims.publish, claims.exp, claims.iat, claims.jti)


def _revoked(services: HubServices, identity: Identity) -> bool:
    return identity.sub is not None and token_revoked(services.revocations, identity.sub, identity.jti, identity.iat)


def revoked_error() -> Unauthorized:
    return Unauthorized("this token has been revoked: get a new one", reason="token_revoked")


def _body(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidPayload("the event payload must be an object like {\"channel\": \"...\"}")
    return payload


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidPayload(f"{name} must be true or false")
    return value


class RealtimeNamespace(Namespace):
    """Handlers translate between Socket.IO and the hub; HubErrors become error acks via HubError.to_ack()."""

    def __init__(self, namespace: str, services: HubServices, start_task: StartTask) -> None:
        super().__init__(namespace)
        self.services = services
        # Guards _identities and _connecting: connect, disconnect, every event and control actions run on threads of
        # their own.
        self._lock = threading.Lock()
        self._identities: dict[str, Identity] = {}
        # Connections inside on_connect -> True once a control action ruled them out (on_connect then refuses them).
        self._connecting: dict[str, bool] = {}
        # Warns, then disconnects at exp; with the authorization hook, the backend may extend the identity first.
        refresher = self._refresh_from_hook if services.auth_hook is not None else None
        self.expiry = TokenExpiry(namespace, lambda: self.socketio.server, start_task, refresher=refresher)
        self.on_connected: Callable[[], None] = lambda: None  # init_realtime: start the control listener

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event not in CLIENT_EVENTS and event not in ("connect", "disconnect"):
            # Without this the client's ack callback would never fire and it could only time out.
            return NotFound(f"unknown event {event!r}; use subscribe, unsubscribe, publish or refresh_token").to_ack()
        return super().trigger_event(event, *args)

    def on_connect(self, auth: Any = None) -> None:
        sid = client_sid()
        try:
            identity = authenticate(self.services, auth, request.headers)
            # Registered before the revocation check: a revocation recorded after the check reaches this connection
            # through its control action, which sees it here (and marks it for refusal while it is connecting).
            with self._lock:
                self._identities[sid] = identity
                self._connecting[sid] = False
            revoked = False  # if the check raises (Unavailable: Redis away), the finally must not fail in its place
            try:
                revoked = _revoked(self.services, identity)
            finally:
                with self._lock:
                    revoked = self._connecting.pop(sid) or revoked
                    if revoked:
                        self._identities.pop(sid, None)
            if revoked:
                raise revoked_error()
        except HubError as exc:  # Unauthorized, or Unavailable (the hook, or the revocation store, cannot answer)
            with self._lock:
                self._identities.pop(sid, None)
            log.debug("connection refused: %s", getattr(exc, "reason", exc.code))
            # The client's connect_error gets {"message": ..., "data": {"code", "message", "reason"}}.
            raise ConnectionRefusedError(exc.message, exc.to_dict()) from None
        self.on_connected()
        self.expiry.track(sid, identity.exp)
        # Raised here, not from integration/observers: Engine.IO observers see sessions, not the identity (sub).
        transport = "websocket" if "transport=websocket" in request.environ.get("QUERY_STRING", "") else "polling"
        self.services.hub.connect(sid, identity.sub, transport)

    def on_disconnect(self, reason: Any = None) -> None:
        sid = client_sid()
        with self._lock:
            self._identities.pop(sid, None)
        self.expiry.forget(sid)
        self.services.hub.disconnect(sid, str(reason or "unknown").replace(" ", "_"))

    def matching(self, wanted: Callable[[Identity], bool], *, refuse_connecting: bool) -> list[tuple[str, Identity]]:
        """The connected sids whose identity is `wanted`; with `refuse_connecting`, those still connecting are
        marked so that their connect is refused instead (a disconnect before the connect ack would confuse them)."""
        found = []
        with self._lock:
            for sid, identity in self._identities.items():
                if not wanted(identity):
                    continue
                if sid in self._connecting:
                    if refuse_connecting:
                        self._connecting[sid] = True
                else:
                    found.append((sid, identity))
        return found

    def identity_of(self, sid: str) -> Identity | None:
        with self._lock:
            return self._identities.get(sid)

    def sub_of(self, sid: str) -> str | None:
        """Who a connection is, for the dashboard's clients table; None for anonymous or unknown sids."""
        with self._lock:
            identity = self._identities.get(sid)
        return identity.sub if identity else None

    def _connected_caller(self) -> tuple[str, Identity]:
        """The calling connection and its identity, after its rate limit is checked."""
        sid = client_sid()
        with self._lock:
            identity = self._identities.get(sid)
        if identity is None:
            raise Unauthorized("not connected", reason="not_connected")
        if self.services.client_limiter is not None:
            self.services.client_limiter.check(sid)
        return sid, identity

    def _caller(self) -> tuple[str, Identity]:
        """The calling connection and its identity, after its rate limit and token expiry are checked."""
        sid, identity = self._connected_caller()
        if identity.exp is not None and identity.exp <= time.time():
            raise Unauthorized("token has expired; reconnect with a new one", reason="token_expired")
        return sid, identity

    def _still_connected(self, sid: str) -> bool:
        return self.socketio.server.manager.is_connected(sid, self.namespace)

    def grants_for(self, identity: Identity, channel: Any) -> tuple[str, ...]:
        """The identity's subscribe grants, plus `channel` when the authorization hook allows what they do not."""
        hook = self.services.auth_hook
        if hook is None or can_subscribe(identity.channels, validate_channel(channel)):
            return identity.channels
        if not hook.may_subscribe(identity.sub, channel):
            raise Forbidden(f"no subscribe permission on {channel}")
        return (*identity.channels, channel)

    def _refresh_from_hook(self, sid: str) -> bool:
        """Answer a token-expiry warning through the authorization hook; False: warn the client as usual."""
        with self._lock:
            current = self._identities.get(sid)
        if current is None or current.sub is None or self.services.auth_hook is None:
            return False
        answer = self.services.auth_hook.refresh(current.sub)
        if answer is None:
            return False
        identity = Identity(answer.sub, answer.channels, answer.publish, answer.exp, iat=int(time.time()),
                            since=current.since)
        with self._lock:
            if sid not in self._identities:
                return True  # it left meanwhile: nobody to warn
            self._identities[sid] = identity
        drop_ungranted(self.services.hub, sid, self._kept_grants(identity, sid))
        self.expiry.track(sid, identity.exp)
        return True

    def _kept_grants(self, identity: Identity, sid: str) -> tuple[str, ...]:
        """The new grants plus the channels of `sid` the hook allowed beyond them (a hook outage keeps them)."""
        hook = self.services.auth_hook
        if hook is None:
            return identity.channels
        extra = []
        for channel in self.services.hub.presence.channels_of(sid):
            if can_subscribe(identity.channels, channel):
                continue
            try:
                if hook.may_subscribe(identity.sub, channel):
                    extra.append(channel)
            except Unavailable:
                extra.append(channel)
        return (*identity.channels, *extra)

    def on_subscribe(self, payload: Any = None) -> dict[str, Any] | None:
        sid, identity = self._caller()
        body = _body(payload)
        hub = self.services.hub
        self._check_channel_grant(identity, body.get("channel"))
        result = hub.subscribe(
            sid,
            identity.sub,
            self.grants_for(identity, body.get("channel")),
            body.get("channel"),
            since=body.get("since"),
            epoch=body.get("epoch"),
            presence=_flag(body, "presence"),
        )
        if not result.ready.wait(ATTACH_TIMEOUT):
            hub.unsubscribe(sid, result.channel)  # queued after the attach, so it undoes it whenever that runs
            raise Unavailable("the subscription could not be completed in time")
        if not self._still_connected(sid):
            hub.disconnect(sid)  # it left while subscribing; its own disconnect may have run before our add
            return None
        try:
            # Again once subscribed: a channel taken away meanwhile missed this subscription in its control action.
            self._check_channel_grant(identity, result.channel)
        except HubError:
            self._undo_subscribe(sid, result.channel)
            raise
        return result.ack()

    def _check_channel_grant(self, identity: Identity, channel: Any) -> None:
        """Refuse a channel that was taken from this user (POST /users/<sub>/unsubscribe) after its token was issued."""
        if identity.sub is None or not isinstance(channel, str):
            return  # anonymous connections are never acted on by sub; a bad name is the hub's to refuse
        if channel_revoked(self.services.revocations, identity.sub, channel, identity.iat):
            raise Forbidden(f"access to {channel} was revoked: a token issued since then is needed")

    def _undo_subscribe(self, sid: str, channel: str) -> None:
        try:
            self.services.hub.unsubscribe(sid, channel)
        except NotFound:  # already taken away by the control action itself
            pass

    def on_unsubscribe(self, payload: Any = None) -> dict[str, Any]:
        sid, _ = self._caller()
        channel = _body(payload).get("channel")
        self.services.hub.unsubscribe(sid, channel)
        return {"ok": True, "channel": channel}

    def on_publish(self, payload: Any = None) -> dict[str, Any]:
        """Like POST /api/v1/publish within the token's publish grants; `exclude_self` keeps this connection out."""
        sid, identity = self._caller()
        body = _body(payload)
        charge_channels(self.services.client_limiter, sid, body)
        exclude = sid if _flag(body, "exclude_self") else None
        published = self.services.hub.publish_request(body, grants=identity.publish, exclude=exclude,
                                                      sub=identity.sub)
        count_duplicates(published.messages)
        return {"ok": True, **published.answer()}

    def on_refresh_token(self, payload: Any = None) -> dict[str, Any] | None:
        """A fresh token (same sub) for this connection; channels it no longer grants are dropped (expiry.py)."""
        sid, current = self._connected_caller()  # an expired token may still be refreshed
        claims = refreshed_claims(self.services.tokens, current.sub, payload)
        identity = Identity(claims.sub, claims.channels, claims.publish, claims.exp, claims.iat, claims.jti,
                            since=current.since)
        with self._lock:
            if sid not in self._identities:
                return None  # it left meanwhile; nobody to ack
            self._identities[sid] = identity
        # Checked once the new identity is in place, for the same reason as at connect (on_connect).
        try:
            revoked = _revoked(self.services, identity)
        except Unavailable:
            revoked = None
        if revoked is not False:
            with self._lock:
                if self._identities.get(sid) is identity:
                    self._identities[sid] = current
            raise revoked_error() if revoked else Unavailable("cannot check the token now, retry shortly")
        self.expiry.track(sid, identity.exp)
        dropped = drop_ungranted(self.services.hub, sid, self._kept_grants(identity, sid))
        return {"ok": True, "exp": identity.exp, "dropped": dropped}
