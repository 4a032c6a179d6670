"""Server-Sent Events: `GET /api/v1/stream`, the Socket.IO path's grants, offsets and recovery over one HTTP response.

A stream is a subscriber like any Socket.IO connection: it subscribes through the hub (grants, anonymous
`public:*`, revoked channels, presence), and its messages come from the same fan-out, as a tap in the channel's
room (integration/room_taps.py). Once subscribed, the request's thread hands the connection to the shared loop
(integration/stream_takeover.py), which serves every stream (transport/sse.py): no thread is held per stream.

Events (each `data:` is one line of JSON):
- a message: `id: <epoch>;<channel>=<offset>;...` (every channel of the stream with the last offset it got, so the
  browser's Last-Event-ID resumes all of them), `event: <event name>`, `data: {"channel","offset","id","ts","data"}`;
- `signalboard:subscribed` first: {"channels": [{"channel","offset","recovered","epoch"}]} (as Socket.IO acks);
- `signalboard:resync` {"channel","offset","epoch","reason"}: history no longer covers the asked position;
- with `presence=1`, `signalboard:presence` {"channel","sub","action","connections"} as a Socket.IO subscribe with
  `"presence": true` gets them (anonymous streams without the subs unless ANONYMOUS_PRESENCE_SUBS);
- `signalboard:token_expiring` {"exp","seconds_left"} shortly before the token's exp, as on Socket.IO (a stream
  cannot take a new token: the client opens a new stream with one and its last id);
- `signalboard:token_expired`, `signalboard:token_revoked`, `signalboard:disconnect`, `signalboard:reconnect`
  (drain, with `retry:`), `signalboard:unsubscribed`, then the stream ends; `: heartbeat` comments in between.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request

from blueprints.realtime.delivery import PRESENCE_EVENT
from blueprints.realtime.expiry import EXPIRED_EVENT, EXPIRING_EVENT, warning_time
from blueprints.realtime.namespace import Identity, authenticate, revoked_error
from blueprints.realtime.services import HubServices, hub_services
from hub.channels import validate_channel
from hub.errors import Forbidden, HubError, InvalidPayload, Unavailable
from hub.revocations import channel_revoked, token_revoked
from integration.room_taps import RoomTaps
from integration.stream_takeover import can_take_over, request_takeover
from transport.loop import SharedLoop
from transport.sse import SseConnection, sse_frame

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__, url_prefix="/api/v1")


@bp.errorhandler(HubError)
def _hub_error(exc: HubError) -> Response:
    from blueprints.api import hub_error  # the API's error answer (imported late: blueprints.api imports this package)

    return hub_error(exc)


EXTENSION_KEY = "sse_streams"
ATTACH_TIMEOUT = 10.0  # as the Socket.IO subscribe (blueprints/realtime/namespace.py)
SUBSCRIBED_EVENT = "signalboard:subscribed"
RESYNC_EVENT = "signalboard:resync"
RECONNECT_EVENT = "signalboard:reconnect"
HEARTBEAT_SECONDS = 15.0
RETRY_MS = 3000
_EPOCH = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_OFFSET = re.compile(r"[0-9]{1,18}")
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n")


def _positions(text: str, what: str) -> tuple[str | None, dict[str, int]]:
    """`<epoch>;<channel>=<offset>;...` (a Last-Event-ID) into (epoch, {channel: offset}); InvalidPayload if bad."""
    epoch, *pairs = text.strip().split(";")
    if not _EPOCH.fullmatch(epoch):
        raise InvalidPayload(f"{what} must look like <epoch>;<channel>=<offset>;... as this stream's ids do")
    found: dict[str, int] = {}
    for pair in pairs:
        channel, _, offset = pair.partition("=")
        if not _OFFSET.fullmatch(offset):
            raise InvalidPayload(f"{what}: each position must be <channel>=<offset> with a whole offset from 0")
        found[validate_channel(channel)] = int(offset)
    return epoch, found


def _since_params(values: list[str]) -> dict[str, int]:
    """`since=<channel>:<offset>` (repeated or comma-separated) into {channel: offset}."""
    found: dict[str, int] = {}
    for item in (part for value in values for part in value.split(",") if part):
        channel, _, offset = item.rpartition(":")
        if not channel or not _OFFSET.fullmatch(offset):
            raise InvalidPayload("since must be <channel>:<offset> with a whole offset from 0 (repeat it or use ,)")
        found[validate_channel(channel)] = int(offset)
    return found


def _channels() -> list[str]:
    names = request.args.getlist("channel") + [c for v in request.args.getlist("channels") for c in v.split(",") if c]
    if not names:
        raise InvalidPayload("name the channels: ?channel=a&channel=b or ?channels=a,b")
    limit = current_app.config["MAX_SUBSCRIPTIONS"]
    if len(names) > limit:
        raise InvalidPayload(f"at most {limit} channels per stream")
    unique = list(dict.fromkeys(validate_channel(name) for name in names))
    return unique


def _presence() -> bool:
    value = request.args.get("presence", "0")
    if value not in ("0", "1"):
        raise InvalidPayload("presence must be 0 or 1")
    return value == "1"


def _token() -> str | None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented.strip():
        return presented.strip()
    return request.args.get("token") or None


class SseStream:
    """One stream: a tap in its channels' rooms that writes SSE frames, and its identity for control actions."""

    def __init__(self, streams: SseStreams, sid: str, identity: Identity, channels: list[str], epoch: str) -> None:
        self.streams = streams
        self.sid = sid
        self.identity = identity
        self.epoch = epoch
        self.positions: dict[str, int] = dict.fromkeys(channels, 0)  # written by the delivering thread only
        self.conn = SseConnection(streams.loop, streams.max_buffered, self._closed)

    def event_id(self) -> str:
        return ";".join([self.epoch, *(f"{channel}={offset}" for channel, offset in self.positions.items())])

    def deliver(self, event: str, args: Any) -> None:
        """From the manager's local emit (integration/room_taps.py): a channel's message or a presence event."""
        if event == PRESENCE_EVENT or len(args) < 2 or not isinstance(args[1], dict):
            self.conn.write(sse_frame(event, args[0] if args else None))
            return
        data, meta = args[0], args[1]
        channel, offset = meta.get("channel"), meta.get("offset")
        if channel in self.positions and isinstance(offset, int):
            if offset <= self.positions[channel]:
                return  # already sent (a replay overlapping live delivery): each message once
            self.positions[channel] = offset
        self.conn.write(sse_frame(event, {**meta, "data": data}, self.event_id()))

    def tell(self, event: str, body: dict[str, Any]) -> None:
        self.conn.write(sse_frame(event, body))

    def end(self, event: str, body: dict[str, Any], *, retry_ms: int | None = None) -> int:
        """Send `event` last and end the stream; 1 if it was still open."""
        if self.conn.closed:
            return 0
        self.conn.close(sse_frame(event, body, retry_ms=retry_ms), reason=event)
        return 1

    def _closed(self, reason: str) -> None:
        # Called on the loop thread: the hub's bookkeeping may reach Redis, so it runs elsewhere.
        self.streams.start_task(self.streams.forget, self, reason)


class SseStreams:
    """Every SSE stream of this instance: opening, control actions (revoke, disconnect), expiry and the drain."""

    def __init__(self, services: HubServices, taps: RoomTaps, loop: SharedLoop, start_task: Callable[..., Any],
                 max_buffered: int, max_streams: int) -> None:
        self.services = services
        self.taps = taps
        self.loop = loop
        self.start_task = start_task
        self.max_buffered = max_buffered
        self.max_streams = max_streams
        self._lock = threading.Lock()  # guards _streams
        self._streams: dict[str, SseStream] = {}
        self.draining = False

    def count(self) -> int:
        return len(self._streams)

    def get(self, sid: str) -> SseStream | None:
        with self._lock:
            return self._streams.get(sid)

    def matching(self, wanted: Callable[[Identity], bool]) -> list[SseStream]:
        with self._lock:
            return [stream for stream in self._streams.values() if wanted(stream.identity)]

    def all(self) -> list[SseStream]:
        return self.matching(lambda identity: True)

    def forget(self, stream: SseStream, reason: str) -> None:
        with self._lock:
            if self._streams.pop(stream.sid, None) is None:
                return
        self.taps.unregister(stream.sid)
        self.services.hub.disconnect(stream.sid, reason.replace(" ", "_"))

    def drain(self) -> None:
        """SIGTERM: every stream is told to come back elsewhere (`retry:` and signalboard:reconnect), then ended."""
        self.draining = True
        for stream in self.all():
            stream.end(RECONNECT_EVENT, {"reason": "server_shutdown", "retry_after_ms": RETRY_MS}, retry_ms=RETRY_MS)

    def open(self, identity: Identity, channels: list[str], epoch: str | None, since: dict[str, int], presence: bool,
             grants_for: Callable[[Identity, str], tuple[str, ...]]) -> SseStream:
        """Subscribe a new stream to `channels` (replaying from `since` where history covers it); raises HubError."""
        if self.draining:
            raise Unavailable("this instance is shutting down: connect to another one", retry_after=1)
        if self.count() >= self.max_streams:
            raise Unavailable("too many SSE streams on this instance", retry_after=1)
        self.loop.ensure_started()
        hub = self.services.hub
        sid = "sse-" + secrets.token_urlsafe(15)
        stream = SseStream(self, sid, identity, channels, hub.history.epoch)
        self.taps.register(sid, stream)
        with self._lock:
            self._streams[sid] = stream
        hub.connect(sid, identity.sub, "sse")
        try:
            # Checked once registered, as at a Socket.IO connect: a revocation recorded after this check finds the
            # stream through its control action.
            if identity.sub is not None and token_revoked(self.services.revocations, identity.sub, identity.jti,
                                                          identity.iat):
                raise revoked_error()
            acks = [self._subscribe(stream, channel, epoch, since, presence, grants_for) for channel in channels]
        except BaseException:
            stream.conn.close(reason="refused")
            raise
        stream.conn.write(sse_frame(SUBSCRIBED_EVENT, {"channels": acks}, stream.event_id()))
        if identity.exp is not None:
            now = time.time()
            self.loop.call_later(max(0.0, warning_time(identity.exp, now) - now), lambda: self._warn(stream))
            self.loop.call_later(max(0.0, identity.exp - now), lambda: self._expire(stream))
        stream.conn.heartbeat_every(HEARTBEAT_SECONDS)
        return stream

    def _subscribe(self, stream: SseStream, channel: str, epoch: str | None, since: dict[str, int], presence: bool,
                   grants_for: Callable[[Identity, str], tuple[str, ...]]) -> dict[str, Any]:
        identity, hub = stream.identity, self.services.hub
        if identity.sub is not None and channel_revoked(self.services.revocations, identity.sub, channel,
                                                        identity.iat):
            raise Forbidden(f"access to {channel} was revoked: a token issued since then is needed")
        asked = since.get(channel)
        if asked is not None:
            stream.positions[channel] = asked
        result = hub.subscribe(stream.sid, identity.sub, grants_for(identity, channel), channel, since=asked,
                               epoch=epoch, presence=presence)
        if not result.ready.wait(ATTACH_TIMEOUT):
            raise Unavailable("the subscription could not be completed in time")
        if asked is not None and not result.recovered:
            # The gap cannot be filled: live delivery starts after `offset`, the client reloads what it needs.
            stream.positions[channel] = max(stream.positions[channel], result.offset)
            stream.conn.write(sse_frame(RESYNC_EVENT, {
                "channel": channel, "offset": result.offset, "epoch": result.epoch,
                "reason": "history no longer holds every message after the given offset" if result.epoch == epoch
                or epoch is None else "the server's numbering changed (new epoch)"}))
        elif asked is None:
            stream.positions[channel] = max(stream.positions[channel], result.offset)
        ack = result.ack()
        ack.pop("ok")
        return ack

    def _warn(self, stream: SseStream) -> None:
        exp = stream.identity.exp
        if not stream.conn.closed and exp is not None:
            stream.conn.write(sse_frame(EXPIRING_EVENT, {"exp": exp, "seconds_left": max(0, round(exp - time.time()))}))

    def _expire(self, stream: SseStream) -> None:
        if stream.conn.closed or stream.identity.exp is None or stream.identity.exp > time.time() + 0.5:
            return
        stream.end(EXPIRED_EVENT, {"code": "unauthorized", "reason": "token_expired", "exp": stream.identity.exp,
                                   "message": "Your token has expired: get a new one and reconnect."})


def sse_streams(app: Any = None) -> SseStreams:
    return (app or current_app).extensions[EXTENSION_KEY]


@bp.get("/stream")
def stream() -> Response:
    """Open an SSE stream (module docstring); errors answer JSON with the usual error shape."""
    services = hub_services()
    if not can_take_over(request.environ):
        raise Unavailable("SSE streams need the gunicorn server (start.sh)")
    token = _token()
    # Who first: a request without a valid token learns nothing about its parameters (401 before any 400).
    identity = authenticate(services, {"token": token} if token else None, request.headers)
    channels = _channels()
    presence = _presence()
    epoch: str | None = None
    since = _since_params(request.args.getlist("since"))
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id:
        epoch, since = _positions(last_event_id, "Last-Event-ID")
    elif request.args.get("epoch") is not None:
        epoch = request.args["epoch"]
        if not _EPOCH.fullmatch(epoch):
            raise InvalidPayload("epoch must be the epoch of an earlier subscription")
    if current_app.extensions["readiness"].draining:
        raise Unavailable("this instance is shutting down: connect to another one", retry_after=1)
    if services.client_limiter is not None:
        services.client_limiter.check(f"sse {request.remote_addr}")
    namespace = current_app.extensions["user_control"].namespace
    streams = sse_streams()
    opened = streams.open(identity, channels, epoch, since, presence, namespace.grants_for)

    def receive(sock: Any) -> None:
        if sock is None:
            opened.conn.close(reason="client left")
        else:
            opened.conn.attach(sock)

    request_takeover(request.environ, HEAD, receive)
    return Response(status=200)  # never sent: the middleware answers with HEAD and keeps the socket
