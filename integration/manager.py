"""python-socketio's client manager, chosen once before the server is built, with its room bookkeeping serialized.

python-socketio 5.18's manager keeps rooms and the clients being disconnected in plain dicts and updates them in
several steps (`pre_disconnect` checks for a namespace's list, then appends to it; `basic_disconnect` removes a
client, then deletes the list once empty). In threading mode disconnects run on many threads at once (ping
timeouts, closed transports, client requests), and under connection churn one thread deletes the list another
is about to use: `KeyError: '/'` at ERROR ("disconnect handler error") and a client half forgotten. Every method
that changes membership is serialized with one lock per manager; reads stay lock-free as before.

`build_client_manager` picks the in-memory manager or, with REDIS_URL, the cluster manager
(integration/redis_manager.py); the factory hands it to `socketio.init_app(client_manager=...)`, so the server is
built with it and nothing is replaced later.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from typing import Any

import socketio

from integration.broadcast import BroadcastManager
from integration.room_taps import RoomTaps
from utils.background import StartTask

# The manager methods every membership change goes through (Manager, and the Redis manager via its base).
MEMBERSHIP_METHODS = ("connect", "pre_disconnect", "basic_disconnect", "basic_enter_room", "basic_leave_room",
                      "basic_close_room")


class SerializedMembership:
    """Mixin for a python-socketio manager: each membership change holds one re-entrant lock (connect calls
    basic_enter_room, and so on). Replaces the six MEMBERSHIP_METHODS; integration/pins.py checks they exist."""

    taps: RoomTaps  # BroadcastManager's: every manager here is one too (SerializedManager, ClusterQueueManager)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.membership_lock = threading.RLock()  # guards rooms, pending_disconnect and the sid maps while changed

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().connect(*args, **kwargs)  # type: ignore[misc]

    def pre_disconnect(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().pre_disconnect(*args, **kwargs)  # type: ignore[misc]

    def basic_disconnect(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().basic_disconnect(*args, **kwargs)  # type: ignore[misc]

    def basic_enter_room(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().basic_enter_room(*args, **kwargs)  # type: ignore[misc]

    def basic_leave_room(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().basic_leave_room(*args, **kwargs)  # type: ignore[misc]

    def basic_close_room(self, *args: Any, **kwargs: Any) -> Any:
        with self.membership_lock:
            return super().basic_close_room(*args, **kwargs)  # type: ignore[misc]


    def room_members(self, namespace: str, room: str) -> Collection[str]:
        """The sids in `room` now, read without the lock from python-socketio's `rooms[namespace][room]` (a size off
        by a client that is leaving is fine for counting), with the room's taps (SSE streams) on '/'."""
        members = self.rooms.get(namespace, {}).get(room, ())  # type: ignore[attr-defined]
        taps = self.taps.members(room) if namespace == "/" and len(self.taps) else ()
        return [*members, *taps] if taps else members


class SerializedManager(SerializedMembership, BroadcastManager):
    """python-socketio's in-memory manager with serialized membership changes and the broadcast fast path."""


def build_client_manager(config: Mapping[str, Any], start_task: StartTask) -> socketio.Manager:
    """The manager for this configuration: in memory, or with REDIS_URL the cluster manager over Redis, whose
    listener starts through `start_task` (utils.drain.BackgroundTasks.start, so SIGTERM stops it)."""
    if not config["REDIS_URL"]:
        return SerializedManager()
    from hub.external import history_for
    from hub.redis_history import CHANNEL_ROOM_PREFIX, Replicas
    from integration.redis_manager import ClusterQueueManager

    history = history_for(config["REDIS_URL"], config["REDIS_KEY_PREFIX"], config["HISTORY_MAX_MESSAGES"],
                          config["HISTORY_MAX_AGE"], config["IDEMPOTENCY_WINDOW_SECONDS"], Replicas.from_config(config))
    return ClusterQueueManager(config["REDIS_URL"], history.keys.socketio_channel, history, CHANNEL_ROOM_PREFIX,
                               start_task)
