"""Open Engine.IO sessions by transport, counted as they change: admission asks on every handshake, and walking every
session for it made each connect O(n) and a connect storm O(n²).

The counts are what utils/runtime_stats.connected_clients used to walk for: the sessions `Server.sockets` holds that
are not closed, by `upgraded` (websocket) or not (polling).

Hooks, each replacing one python-engineio internal; integration/pins.py checks each of them:
- `CountedSessions` takes the place of `Server.sockets`, the dict python-engineio registers every session in
  (`self.sockets[sid] = s` in `_handle_connect`) and removes it from (`del self.sockets[sid]`; ours `pop`); it counts
  what it holds. python-engineio's `disconnect()` of every client puts a plain dict back: readers then walk that one.
- `CountedSocket.closed` and `.upgraded`: properties over the instance attributes python-engineio's BaseSocket sets
  (`self.closed = True` in `Socket.close`, `self.upgraded = ...` in its websocket upgrade; ours in
  integration/shared_sockets.py), so each change moves a session between the counts. The values stay in the
  instance's `__dict__` under python-engineio's own names, so a socket adopted after it was created keeps them.
"""

from __future__ import annotations

import threading
from typing import Any

from engineio.socket import Socket

_HELD_BY = "_signalboard_sessions"  # instance attribute: the CountedSessions that holds (and counts) this socket


class CountedSessions(dict):
    """python-engineio's `Server.sockets` (sid -> socket), counting its open sessions by transport."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # guards the counts and which socket is counted where
        self._open = {"websocket": 0, "polling": 0}

    def by_transport(self) -> dict[str, int]:
        """{"websocket": n, "polling": n}: the sessions held and not closed."""
        with self._lock:
            return dict(self._open)

    def __setitem__(self, sid: str, socket: Any) -> None:
        with self._lock:
            old = dict.get(self, sid)
            if old is socket:
                return
            if old is not None:
                self._forget(old)
            dict.__setitem__(self, sid, socket)
            socket.__dict__[_HELD_BY] = self
            self._count(socket, 1)

    def __delitem__(self, sid: str) -> None:
        with self._lock:
            socket = dict.pop(self, sid)
            self._forget(socket)

    def pop(self, sid: str, *default: Any) -> Any:
        with self._lock:
            if sid not in self:
                if default:
                    return default[0]
                raise KeyError(sid)
            socket = dict.pop(self, sid)
            self._forget(socket)
            return socket

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("CountedSessions changes only through [sid] = socket, del and pop")

    clear = popitem = setdefault = update = __ior__ = _unsupported

    def changing(self, socket: Any, name: str, value: Any) -> None:
        """`socket.<name> = value` for a socket this dict holds: the count follows."""
        with self._lock:
            held = socket.__dict__.get(_HELD_BY) is self
            if held:
                self._count(socket, -1)
            socket.__dict__[name] = value
            if held:
                self._count(socket, 1)

    def _forget(self, socket: Any) -> None:
        if socket.__dict__.get(_HELD_BY) is self:
            self._count(socket, -1)
            del socket.__dict__[_HELD_BY]

    def _count(self, socket: Any, step: int) -> None:
        state = socket.__dict__
        if not state.get("closed", False):
            self._open["websocket" if state.get("upgraded", False) else "polling"] += step


def _flag(name: str) -> property:
    def get(self: Socket) -> Any:
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def set_(self: Socket, value: Any) -> None:
        sessions = self.__dict__.get(_HELD_BY)
        if sessions is None:
            self.__dict__[name] = value
        else:
            sessions.changing(self, name, value)

    return property(get, set_)


class CountedSocket(Socket):
    """python-engineio's Socket whose `closed` and `upgraded` keep its server's CountedSessions true."""

    closed = _flag("closed")
    upgraded = _flag("upgraded")


def install_session_counts(engineio_server: Any) -> CountedSessions:
    """Put a CountedSessions in `engineio_server.sockets` (before the first session: it must count them all)."""
    if engineio_server.sockets:
        raise RuntimeError("session counts must be installed before the first Engine.IO session")
    sessions = engineio_server.sockets = CountedSessions()
    return sessions
