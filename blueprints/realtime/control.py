"""Control actions applied to this instance's realtime connections (list, disconnect, unsubscribe, revoke).

Called by the control bus (hub.control): in-process without Redis, from the control listener with REDIS_URL, so
every instance applies each action to its own connections. Each action is told to the client first, then done:

- `signalboard:disconnect` {"reason", "reconnect"}, then a server disconnect;
- `signalboard:unsubscribed` {"channel", "reason"}, after it left the channel (and its presence);
- `signalboard:token_revoked` {"code", "reason": "token_revoked", "message"}, then a server disconnect.

Emits go to this instance's own sockets directly (`ignore_queue`): through the message queue they would arrive
after the disconnect that follows them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blueprints.realtime.namespace import Identity, RealtimeNamespace
from blueprints.realtime.services import HubServices
from hub.errors import NotFound
from hub.revocations import jti_key, revoked_by, sub_key
from utils.socketio_error_handler import swallow_disconnected_session

if TYPE_CHECKING:
    from blueprints.realtime.stream import SseStream, SseStreams

log = logging.getLogger(__name__)

DISCONNECT_EVENT = "signalboard:disconnect"
UNSUBSCRIBED_EVENT = "signalboard:unsubscribed"
TOKEN_REVOKED_EVENT = "signalboard:token_revoked"
RECENT_ACTIONS = 50


class ControlLog:
    """The latest control actions applied here, for the dashboard's event list (bounded)."""

    def __init__(self) -> None:
        # Guards _rows and _seq: the control listener (or a request thread) adds, the dashboard sampler reads.
        self._lock = threading.Lock()
        self._rows: deque[dict[str, Any]] = deque(maxlen=RECENT_ACTIONS)
        self._seq = itertools.count(1)

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append({"seq": next(self._seq), "ts": int(time.time() * 1000), **row})

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._rows)


class LocalUserControl:
    def __init__(self, namespace: RealtimeNamespace, services: HubServices, instance_id: str) -> None:
        self.namespace = namespace
        self.services = services
        self.instance_id = instance_id
        self.log = ControlLog()
        self.streams: SseStreams | None = None  # this instance's SSE streams (init_streams), acted on alike

    def _server(self) -> Any:
        return self.namespace.socketio.server

    def apply(self, action: dict[str, Any]) -> dict[str, Any]:
        """One action for this instance's connections; returns this instance's share of the answer."""
        kind = action.get("action")
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = {
            "list": self._list, "disconnect": self._disconnect, "unsubscribe": self._unsubscribe,
            "revoke": self._revoke}.get(kind)  # type: ignore[arg-type]
        if handler is None:
            log.warning("ignored an unknown control action %r", kind)
            return {"instance": self.instance_id, "count": 0}
        return {"instance": self.instance_id, **handler(action)}

    def _matching(self, wanted: Callable[[Identity], bool], *, refuse_connecting: bool) -> list[tuple[str, Identity]]:
        """Socket.IO connections and SSE streams whose identity is `wanted` (see RealtimeNamespace.matching)."""
        found = self.namespace.matching(wanted, refuse_connecting=refuse_connecting)
        if self.streams is not None:
            found += [(stream.sid, stream.identity) for stream in self.streams.matching(wanted)]
        return found

    def _of_sub(self, sub: Any) -> Callable[[Identity], bool]:
        return lambda identity: identity.sub is not None and identity.sub == sub

    def _list(self, action: dict[str, Any]) -> dict[str, Any]:
        server = self._server()
        rows = []
        for sid, identity in self._matching(self._of_sub(action.get("sub")), refuse_connecting=False):
            eio_sid = server.manager.eio_sid_from_sid(sid, self.namespace.namespace)
            session = server.eio.sockets.get(eio_sid) if eio_sid else None
            transport = "websocket" if session is not None and session.upgraded else "polling"
            rows.append({
                "sid": sid,
                "instance": self.instance_id,
                "transport": "sse" if self._stream(sid) is not None else transport,
                "channels": sorted(self.services.hub.presence.channels_of(sid)),
                "connected_since": round(identity.since, 3),
                "token_expires_at": identity.exp,
            })
        return {"connections": rows}

    def _disconnect(self, action: dict[str, Any]) -> dict[str, Any]:
        found = self._matching(self._of_sub(action.get("sub")), refuse_connecting=True)
        body = {"reason": action.get("reason"), "reconnect": bool(action.get("reconnect"))}
        count = sum(self._end(sid, DISCONNECT_EVENT, body) for sid, _ in found)
        self._record("disconnect user", f"sub {action.get('sub')}", count)
        return {"count": count}

    def _unsubscribe(self, action: dict[str, Any]) -> dict[str, Any]:
        channel = action.get("channel")
        hub = self.services.hub
        count = 0
        for sid, _ in self._matching(self._of_sub(action.get("sub")), refuse_connecting=False):
            try:
                hub.unsubscribe(sid, channel, reason="server")
            except NotFound:
                continue  # not subscribed to it (here); its later subscribes are refused by the revocation
            count += 1
            self._emit(sid, UNSUBSCRIBED_EVENT, {"channel": channel, "reason": "unsubscribed by the server"})
        self._record("unsubscribe user", f"sub {action.get('sub')} from {channel}", count)
        return {"count": count}

    def _revoke(self, action: dict[str, Any]) -> dict[str, Any]:
        wanted = _revoked_by(action)
        found = self._matching(wanted, refuse_connecting=True)
        body = {"code": "unauthorized", "reason": "token_revoked",
                "message": "Your token has been revoked: get a new one before reconnecting."}
        count = sum(self._end(sid, TOKEN_REVOKED_EVENT, body) for sid, _ in found)
        what = f"sub {action['sub']}" if "sub" in action else f"jti {action.get('jti')}"
        self._record("revoke tokens", what, count)
        return {"count": count}

    def sweep(self) -> None:
        """Disconnect local holders of tokens revoked while this instance could not hear (a Redis outage)."""
        held = self._matching(lambda identity: identity.sub is not None, refuse_connecting=False)
        if not held:
            return
        keys = [key for _, identity in held for key in (sub_key(identity.sub or ""), jti_key(identity.jti or ""))]
        found = self.services.revocations.revoked_at(keys)
        body = {"code": "unauthorized", "reason": "token_revoked",
                "message": "Your token has been revoked: get a new one before reconnecting."}
        count = 0
        for index, (sid, identity) in enumerate(held):
            if revoked_by(found[2 * index], found[2 * index + 1], identity.jti, identity.iat):
                count += self._end(sid, TOKEN_REVOKED_EVENT, body)
        if count:
            self._record("revoke tokens", "missed during an outage", count)

    def _stream(self, sid: str) -> SseStream | None:
        return self.streams.get(sid) if self.streams is not None else None

    @swallow_disconnected_session
    def _emit(self, sid: str, event: str, body: dict[str, Any]) -> None:
        stream = self._stream(sid)
        if stream is not None:
            stream.tell(event, body)
            return
        self._server().emit(event, body, to=sid, namespace=self.namespace.namespace, ignore_queue=True)

    def _end(self, sid: str, event: str, body: dict[str, Any]) -> int:
        """Tell `sid` why, then disconnect it; 1 if it was still connected."""
        stream = self._stream(sid)
        if stream is not None:
            return stream.end(event, body)
        server = self._server()
        if not server.manager.is_connected(sid, self.namespace.namespace):
            return 0
        self._emit(sid, event, body)
        server.disconnect(sid, namespace=self.namespace.namespace, ignore_queue=True)
        return 1

    def _record(self, action: str, target: str, count: int) -> None:
        self.log.add({"action": action, "target": target, "connections": count})
        log.info("control: %s (%s): %d connection(s) on this instance", action, target, count)


def _revoked_by(action: dict[str, Any]) -> Callable[[Identity], bool]:
    if "sub" in action:
        sub, before = action["sub"], float(action.get("before", 0))
        return lambda identity: identity.sub == sub and identity.iat <= before
    jti = action.get("jti")
    return lambda identity: identity.sub is not None and identity.jti is not None and identity.jti == jti
