"""Subscribers that are not Socket.IO clients (SSE streams) as members of python-socketio's rooms.

Every message a channel delivers reaches its room through the client manager's local emit,
`integration/broadcast.py` `BroadcastManager.emit`: called by `Server.emit` in memory mode, and by
`PubSubManager._handle_emit` (the listener's packets, catch-up included) with REDIS_URL. It hands that same emit to
`RoomTaps.deliver`, so a tap in a room gets exactly what the room's Socket.IO members get, in the same order, from
the same fan-out. `room_members` counts taps too, so metrics and the Redis listener's catch-up see them.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any, Protocol


class Tap(Protocol):
    def deliver(self, event: str, args: Sequence[Any]) -> None:
        """One emit to a room this tap is in (`args`: the emit's arguments, as a Socket.IO client gets them)."""


def emit_args(data: Any) -> list[Any]:
    """An emit's data as python-socketio spreads it: a tuple or list is several arguments, anything else one."""
    if isinstance(data, tuple | list):
        return list(data)
    return [] if data is None else [data]


class RoomTaps:
    """Taps by sid and by room; a tap's own sid is its private room (recovery backlogs are sent there)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _taps and _rooms
        self._taps: dict[str, Tap] = {}
        self._rooms: dict[str, dict[str, Tap]] = {}

    def register(self, sid: str, tap: Tap) -> None:
        with self._lock:
            self._taps[sid] = tap

    def unregister(self, sid: str) -> None:
        with self._lock:
            self._taps.pop(sid, None)
            for room in [room for room, members in self._rooms.items() if sid in members]:
                self._leave(sid, room)

    def known(self, sid: str) -> bool:
        return sid in self._taps

    def __len__(self) -> int:
        return len(self._taps)

    def enter(self, sid: str, room: str) -> bool:
        """Put tap `sid` in `room`; False if it is not registered (any more)."""
        with self._lock:
            tap = self._taps.get(sid)
            if tap is None:
                return False
            self._rooms.setdefault(room, {})[sid] = tap
            return True

    def leave(self, sid: str, room: str) -> None:
        with self._lock:
            self._leave(sid, room)

    def _leave(self, sid: str, room: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._rooms[room]

    def members(self, room: str) -> Collection[str]:
        return tuple(self._rooms.get(room, ()))

    def deliver(self, room: Any, event: str, data: Any, skip_sid: Any = None) -> None:
        """What the manager's local emit sent to `room` (a channel room, or one tap's sid), minus `skip_sid`."""
        if not self._taps or not isinstance(room, str):
            return  # the hot path without any tap: one attribute read
        with self._lock:
            members = self._rooms.get(room)
            targets = list(members.items()) if members else []
            if not targets and room in self._taps:
                targets = [(room, self._taps[room])]
        if not targets:
            return
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        args = emit_args(data)
        for sid, tap in targets:
            if sid not in skipped:
                tap.deliver(event, args)
