"""The library messages, exception texts and names our log filters and race handling recognise, defined once.

These are not APIs either: python-engineio could reword any of them. utils/socketio_error_handler.py and
utils/malformed_input.py match against these constants only, and integration/pins.py checks each one against the
installed library source, so a rewording fails start-up instead of silently letting errors through at ERROR.
"""

from __future__ import annotations

import os

# KeyError arguments python-engineio raises for a request or emit naming a session that has gone.
GONE_SESSION_MESSAGES = frozenset({"Session is disconnected", "Session not found"})
# python-engineio's warning when an emit addresses a client that has just gone.
CANNOT_SEND_TO_SID = "Cannot send to sid %s"
# What python-engineio appends to a client-caused error it logs once at ERROR.
LOG_ONCE_SUFFIX = "(further occurrences of this error will be logged with level INFO)"
# The module whose ValueError means "undecodable Engine.IO packet" in a traceback gunicorn logs.
ENGINEIO_PACKET_MODULE = os.path.join("engineio", "packet.py")
# Python names a thread after its target: python-engineio's threaded websocket writer is `def writer()`.
ENGINEIO_WRITER_THREAD_SUFFIX = "(writer)"
