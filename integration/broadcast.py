"""The broadcast fast path: one encoded frame handed to every shared-loop websocket of a room in one tight loop.

python-socketio's `Manager.emit` already encodes a broadcast once, then walks the room calling, per recipient,
`Server._send_eio_packet` -> `engineio.Server.send_packet` (`_get_socket`) -> `Socket.send` (`check_ping_timeout`,
an INFO log call) -> `queue.put` -> the shared transport's sink -> `packet_frame` -> the connection's buffer ->
a wake-up of the loop. docs/profiles.md measured that chain as most of a delivery's CPU.

`BroadcastManager.emit` replaces `Manager.emit` (it sits right above it in every manager's MRO, so python-socketio's
`PubSubManager._handle_emit` reaches it with Redis too, for local publishes and for packets from the queue alike).
For an emit without a callback it builds the same Engine.IO packets, then for each participant not skipped
(`skip_sid`: echo suppression) whose session is on a shared-loop websocket (the transport's `direct` map, filled
when a session's queue is attached to its websocket and emptied when the websocket closes), hands the frames to
that connection (`WebSocketConnection.queue_frames`: same lock, same slow-consumer bound as `write`). A connection
with nothing buffered and no flush pending sends them at once, from this thread (written through, one non-blocking
send()); only what its kernel buffer does not take is buffered, and after the loop the loop thread is asked, with
one lock and one wake-up, to flush every connection that had nothing pending. Every other
participant (polling, upgrading, threaded transport) takes python-socketio's own path, `_send_eio_packet`,
unchanged; emits with a callback go to `Manager.emit` itself. A closed session's connection drops the frames as
`Socket.send` would; a session past its ping timeout is closed by python-engineio's service task instead of by
the next send. Each participant gets the packets once, in emit order (the fan-out worker emits a channel's
messages one after the other, and a connection sends directly only while nothing of it is buffered).
`emit_each` sends several emits to one room the same way, each connection getting all their frames in one write: a
recovering client's backlog, which arrives from Redis as one packet (integration/redis_manager.py).

Internals it relies on (integration/pins.py checks them): `Manager.emit`'s packet building (`packet_class`,
`encode()`, one `eio_packet.Packet(MESSAGE, p)` per encoded part), `get_participants(namespace, room)` yielding
`(sid, eio_sid)`, `Server._send_eio_packet`, `PubSubManager._handle_emit` calling `super().emit`, and
python-engineio's service task checking every session's ping timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from integration.room_taps import RoomTaps
from transport.frames import packet_frame
from transport.loop import SharedLoop
from transport.websocket import WebSocketConnection


class BroadcastManager(socketio.Manager):
    """python-socketio's Manager whose callback-less emits skip the per-recipient calls for shared websockets, and
    whose every local emit on '/' also reaches the room's taps (SSE streams, integration/room_taps.py)."""

    # Set by install_integration with the shared transport (use_shared_transport); empty: every recipient takes
    # python-socketio's own path (threaded transport, or a manager used outside the app).
    direct: Mapping[str, WebSocketConnection] = {}
    loop: SharedLoop | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taps = RoomTaps()

    def use_shared_transport(self, direct: Mapping[str, WebSocketConnection], loop: SharedLoop) -> None:
        self.direct, self.loop = direct, loop

    def emit(self, event: Any, data: Any, namespace: Any, room: Any = None, skip_sid: Any = None,
             callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        # The one local delivery of every message, in memory mode and from the Redis queue: the taps get the same.
        self._emit_to_sessions(event, data, namespace, room, skip_sid, callback, to, **kwargs)
        if namespace in (None, "/"):
            self.taps.deliver(to or room, event, data, skip_sid)

    def emit_each(self, emits: Sequence[tuple[str, tuple[Any, ...]]], namespace: str, room: str) -> None:
        """Several callback-less emits to one room, in order, as `emit` would send them one by one, but each shared
        websocket gets all their frames in one write: a recovering client's backlog (integration/redis_manager.py)."""
        if self.loop is None:
            for event, data in emits:
                self.emit(event, data, namespace, room=room)
            return
        if namespace in self.rooms:
            encoded = [self._encode(event, data, namespace) for event, data in emits]
            self._hand_over(namespace, room, None, [pkt for pkts, _ in encoded for pkt in pkts],
                            b"".join(frames for _, frames in encoded))
        if namespace in (None, "/"):
            for event, data in emits:
                self.taps.deliver(room, event, data, None)

    def _emit_to_sessions(self, event: Any, data: Any, namespace: Any, room: Any = None, skip_sid: Any = None,
                          callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        if callback or self.loop is None:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to,
                                **kwargs)
        if namespace not in self.rooms:
            return None
        eio_pkts, frames = self._encode(event, data, namespace)
        self._hand_over(namespace, to or room, skip_sid, eio_pkts, frames)
        return None

    def _encode(self, event: Any, data: Any, namespace: Any) -> tuple[list[eio_packet.Packet], bytes]:
        """The Engine.IO packets of an emit, built as Manager.emit builds them, and their websocket frames."""
        if isinstance(data, tuple):  # as Manager.emit: a tuple is several arguments
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event] + data).encode()
        eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, part)
                    for part in (encoded if isinstance(encoded, list) else [encoded])]
        return eio_pkts, b"".join(packet_frame(pkt) for pkt in eio_pkts)

    def _hand_over(self, namespace: Any, room: Any, skip_sid: Any, eio_pkts: list[eio_packet.Packet],
                   frames: bytes) -> None:
        # The loop below runs once per recipient: everything it can do once is done here (no attribute lookups, no
        # allocation per recipient; a written-through send needs no flush, so to_flush stays empty in the common case).
        get_conn = self.direct.get
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        to_flush: list[WebSocketConnection] = []
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            conn = get_conn(eio_sid)
            if conn is None:
                self._send_by_library(eio_sid, eio_pkts)
            elif conn.queue_frames(frames):
                to_flush.append(conn)
        if to_flush and self.loop is not None:
            self.loop.flush_all(to_flush)

    def _send_by_library(self, eio_sid: str, eio_pkts: list[eio_packet.Packet]) -> None:
        """python-socketio's own path, for a recipient not on a shared websocket (polling, upgrading, threaded)."""
        for pkt in eio_pkts:
            self.server._send_eio_packet(eio_sid, pkt)
