"""python-socketio's Redis pub/sub packet format, defined once: every packet we write or read back follows it.

Three writers produce python-socketio queue packets by hand: the catch-up replay (integration/redis_manager.py),
the markers (python-socketio `callback` packets completed by a Lua script) and the Lua script in
hub/redis_history.py that publishes each message in offset order. integration/pins.py checks, at start-up, that
python-socketio still builds packets with exactly these keys and that the Lua writes them in this order.
"""

from __future__ import annotations

import json
from typing import Any

# PubSubManager.emit's packet, in the order python-socketio writes it; the Lua appends SIGNALBOARD_KEY after.
EMIT_KEYS = ("method", "event", "data", "binary", "namespace", "room", "skip_sid", "callback", "host_id")
# PubSubManager._return_callback's packet: the listener calls callbacks[sid][id](*args) on the host it names.
CALLBACK_KEYS = ("method", "host_id", "sid", "namespace", "id", "args")
# Our own field on emit packets: {"channel", "offset", "epoch"} (python-socketio ignores keys it does not know).
SIGNALBOARD_KEY = "signalboard"


def emit_packet(event: str, data: list[Any], room: str, host_id: str, signalboard: dict[str, Any]) -> dict[str, Any]:
    """An `emit` to `room` on namespace '/', as python-socketio's listener reads it."""
    values: tuple[Any, ...] = ("emit", event, data, False, "/", room, None, None, host_id)
    packet: dict[str, Any] = dict(zip(EMIT_KEYS, values, strict=True))
    packet[SIGNALBOARD_KEY] = signalboard
    return packet


def callback_prefix(host_id: str, sid: str, callback_id: int) -> str:
    """A `callback` packet up to the opening of its `args` list; the sender appends the args and `]}`."""
    values = ("callback", host_id, sid, "/", callback_id)
    pairs = zip(CALLBACK_KEYS[:-1], values, strict=True)
    body = ",".join(f"{json.dumps(key)}:{json.dumps(value)}" for key, value in pairs)
    return "{" + body + f',"{CALLBACK_KEYS[-1]}":['


def callback_id(prefix: str) -> int:
    """The callback id of a prefix made by `callback_prefix` (raises ValueError for anything else)."""
    packet = json.loads(prefix + "]}")
    if list(packet) != list(CALLBACK_KEYS) or not isinstance(packet["id"], int):
        raise ValueError(f"not a callback packet prefix: {prefix[:80]!r}")
    return packet["id"]
