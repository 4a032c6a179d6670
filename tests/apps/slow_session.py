"""The real app plus handlers that touch the session after the client may have gone (the origin's third race)."""

from __future__ import annotations

import time

from app import create_app as create_real_app
from extensions import client_sid, socketio

HOLD_SECONDS = 1.5


def create_app():
    app = create_real_app()

    @socketio.on("slow_session")
    def slow_session():
        # Started in the background too: a thread outside any handler meets the same gone session.
        socketio.start_background_task(_touch_session_later, client_sid())
        time.sleep(HOLD_SECONDS)
        return {"ok": True, "session": socketio.server.get_session(client_sid())}

    return app


def _touch_session_later(sid: str) -> None:
    time.sleep(HOLD_SECONDS)
    socketio.server.get_session(sid)
