"""integration/session_counts.py: the open-session counts admission reads agree with a walk over every session."""

from __future__ import annotations

import random
import threading

import pytest
import socketio
from engineio.socket import Socket

from integration.bounded_sockets import BoundedSocket
from integration.session_counts import CountedSessions, install_session_counts
from utils.runtime_stats import connected_clients


def walked(sessions: dict) -> dict[str, int]:
    counts = {"websocket": 0, "polling": 0}
    for socket in list(sessions.values()):
        if not socket.closed:
            counts["websocket" if socket.upgraded else "polling"] += 1
    return counts


@pytest.fixture
def eio():
    server = socketio.Server(async_mode="threading").eio
    install_session_counts(server)
    return server


def new_session(eio, sid: str) -> Socket:
    """What python-engineio's _handle_connect does, then the adopter's class swap."""
    socket = Socket(eio, sid)
    eio.sockets[sid] = socket
    socket.__class__ = BoundedSocket
    return socket


def test_counts_follow_upgrade_close_and_removal(eio):
    a, b, c = (new_session(eio, sid) for sid in "abc")
    assert eio.sockets.by_transport() == {"websocket": 0, "polling": 3}
    a.upgraded = True
    assert eio.sockets.by_transport() == {"websocket": 1, "polling": 2}
    a.upgraded = True  # no change, no double count
    b.closed = True  # closed but still held: not counted, as the walk did
    assert eio.sockets.by_transport() == {"websocket": 1, "polling": 1} == walked(eio.sockets)
    del eio.sockets["b"]
    b.closed = False  # a socket no longer held moves no count
    assert eio.sockets.pop("c") is c and eio.sockets.pop("c", None) is None
    assert eio.sockets.by_transport() == {"websocket": 1, "polling": 0}
    c.upgraded = True
    a.closed = True
    assert eio.sockets.by_transport() == {"websocket": 0, "polling": 0}
    assert connected_clients(eio, sse=2) == {"websocket": 0, "polling": 0, "sse": 2}
    with pytest.raises(KeyError):
        eio.sockets.pop("zz")


def test_a_socket_registered_again_under_its_sid_is_counted_once(eio):
    a = new_session(eio, "a")
    eio.sockets["a"] = a
    replacement = new_session(eio, "a")
    assert eio.sockets.by_transport() == {"websocket": 0, "polling": 1}
    a.closed = True  # the replaced socket is no longer this dict's
    replacement.upgraded = True
    assert eio.sockets.by_transport() == {"websocket": 1, "polling": 0}


def test_the_flags_read_back_as_python_engineio_set_them(eio):
    socket = new_session(eio, "a")
    assert (socket.closed, socket.upgraded) == (False, False)
    socket.close(wait=False, abort=True)  # python-engineio's own close sets closed = True
    assert socket.closed is True and socket.__dict__["closed"] is True
    assert eio.sockets.by_transport() == {"websocket": 0, "polling": 0}


def test_only_the_changes_python_engineio_makes_are_allowed(eio):
    with pytest.raises(TypeError):
        eio.sockets.update({"a": Socket(eio, "a")})
    with pytest.raises(TypeError):
        eio.sockets.clear()


def test_a_plain_dict_is_walked(eio):
    eio.sockets = {"a": Socket(eio, "a")}  # what python-engineio's disconnect() of every client leaves
    assert connected_clients(eio) == {"websocket": 0, "polling": 1, "sse": 0}


def test_installed_only_before_the_first_session(eio):
    eio.sockets["a"] = Socket(eio, "a")
    with pytest.raises(RuntimeError):
        install_session_counts(eio)


def test_concurrent_changes_keep_the_counts_exact(eio):
    rng = random.Random(20)
    sockets = [new_session(eio, f"s{i}") for i in range(400)]
    plans = [[rng.choice(("upgrade", "close", "remove")) for _ in range(3)] for _ in sockets]

    def run(part: int) -> None:
        for socket, plan in list(zip(sockets, plans, strict=True))[part::4]:
            for step in plan:
                if step == "upgrade":
                    socket.upgraded = True
                elif step == "close":
                    socket.closed = True
                else:
                    eio.sockets.pop(socket.sid, None)

    threads = [threading.Thread(target=run, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert eio.sockets.by_transport() == walked(eio.sockets)
    assert isinstance(eio.sockets, CountedSessions)
