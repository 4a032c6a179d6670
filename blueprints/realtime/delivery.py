"""The fan-out worker's view of Socket.IO: channel rooms, presence rooms and emits to them."""

from __future__ import annotations

import time
from typing import Any

from hub import Message, PresenceChange
from hub.presence import PRESENCE_ANONYMOUS, PresenceView
from utils.metrics import FANOUT_LATENCY, MESSAGES_DELIVERED, MESSAGES_PUBLISHED, channel_namespace

PRESENCE_EVENT = "signalboard:presence"


# Room names contain a space, which no channel name can, so a channel can never be mistaken for a sid's own room.
def channel_room(channel: str) -> str:
    return f"channel {channel}"


def presence_room(channel: str, view: PresenceView | None = None) -> str:
    return f"presence-anonymous {channel}" if view == PRESENCE_ANONYMOUS else f"presence {channel}"


class SocketIODelivery:
    """Implements hub.fanout.Delivery with a python-socketio server; called only by the fan-out worker."""

    def __init__(self, server: Any, namespace: str = "/") -> None:
        self._server = server
        self._namespace = namespace

    def _connected(self, sid: str) -> bool:
        return self._server.manager.is_connected(sid, self._namespace)

    def send(self, message: Message, sid: str | None = None, exclude: str | None = None) -> None:
        room = sid or channel_room(message.channel)
        self._server.emit(message.event, data=(message.data, message.meta()), to=room, skip_sid=exclude,
                          namespace=self._namespace)
        label = channel_namespace(message.channel)
        if sid is None:  # each published message is emitted to its channel exactly once, here
            MESSAGES_PUBLISHED.labels(label).inc()
            FANOUT_LATENCY.observe(max(0.0, time.time() - message.ts / 1000))
        MESSAGES_DELIVERED.labels(label).inc(self._audience(room, exclude))

    def _audience(self, room: str, exclude: str | None) -> int:
        members = self._server.manager.room_members(self._namespace, room)  # integration/manager.py
        return len(members) - (exclude is not None and exclude in members)

    def send_presence(self, change: PresenceChange) -> None:
        body = {
            "channel": change.channel,
            "sub": change.sub,
            "action": "join" if change.joined else "leave",
            "connections": change.connections,
        }
        self._server.emit(PRESENCE_EVENT, data=body, to=presence_room(change.channel), namespace=self._namespace)
        self._server.emit(PRESENCE_EVENT, data={**body, "sub": None},
                          to=presence_room(change.channel, PRESENCE_ANONYMOUS), namespace=self._namespace)

    def add(self, sid: str, channel: str, presence: PresenceView | None) -> None:
        rooms = [channel_room(channel)] + ([presence_room(channel, presence)] if presence else [])
        taps = self._server.manager.taps  # SSE streams (integration/room_taps.py): rooms of their own
        if taps.known(sid):
            if not all(taps.enter(sid, room) for room in rooms):
                self.remove(sid, channel)  # the stream ended while the subscription was queued
            return
        if not self._connected(sid):
            return  # it left while the subscription was queued; its disconnect already cleaned up
        try:
            for room in rooms:
                self._server.enter_room(sid, room, namespace=self._namespace)
        # python-socketio's way of saying the sid vanished between the check above and this call.
        except (KeyError, ValueError):
            self.remove(sid, channel)
            return
        # python-socketio marks a leaving sid as disconnected before it clears its rooms, so if it is still
        # connected now, that clearing is yet to come and will include these rooms; if not, undo them here.
        if not self._connected(sid):
            self.remove(sid, channel)

    def remove(self, sid: str, channel: str) -> None:
        taps = self._server.manager.taps
        for room in (channel_room(channel), presence_room(channel), presence_room(channel, PRESENCE_ANONYMOUS)):
            if taps.known(sid):
                taps.leave(sid, room)
            else:
                self._server.leave_room(sid, room, namespace=self._namespace)
