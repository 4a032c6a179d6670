"""python-socketio's room bookkeeping, made safe for threads.

python-socketio 5.18's manager keeps rooms and the clients being disconnected in plain dicts and updates them in
several steps (`pre_disconnect` checks for a namespace's list, then appends to it; `basic_disconnect` removes a
client, then deletes the list once empty). In threading mode disconnects run on many threads at once (ping
timeouts, closed transports, client requests), and under connection churn one thread deletes the list another
is about to use: `KeyError: '/'` at ERROR ("disconnect handler error") and a client half forgotten. Every method
that changes membership is serialized here with one lock per manager; reads stay lock-free as before.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

# The manager methods every membership change goes through (Manager, and the Redis manager via its base).
MEMBERSHIP_METHODS = ("connect", "pre_disconnect", "basic_disconnect", "basic_enter_room", "basic_leave_room",
                      "basic_close_room")


def serialize_membership(manager: Any) -> None:
    """Wrap `manager`'s membership methods in one re-entrant lock (connect calls basic_enter_room, and so on)."""
    if getattr(manager, "_signalboard_membership_lock", None) is not None:
        return
    lock = threading.RLock()
    for name in MEMBERSHIP_METHODS:
        method = getattr(manager, name)  # AttributeError: python-socketio changed; see tests/unit/test_manager_lock.py

        @functools.wraps(method)
        def locked(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with lock:
                return __method(*args, **kwargs)

        setattr(manager, name, locked)
    manager._signalboard_membership_lock = lock
