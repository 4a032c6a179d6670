"""Malformed Engine.IO/Socket.IO input gets the protocol's error and a close, one WARNING line, never a hang.

What python-engineio 4.15 / python-socketio 5.18 do on their own with hostile input, and why each needs a guard:

- A polling POST carrying a packet type clients may not send (OPEN, PING, NOOP, 7-9) or a body over
  MAX_HTTP_BUFFER_SIZE: Engine.IO closes the session with `wait=True`, which waits for a GET to drain its queue; the
  socket guard answers that GET 400 (the session is closed), so the POST's thread is pinned forever. A handful of
  such requests starve the worker.
- A polling POST that is not UTF-8 or does not decode: a traceback at ERROR and a 200, session left open.
- A Socket.IO packet that does not decode (truncated JSON, unknown type, an event that is not a list): a traceback at
  ERROR on every message; binary packets may announce up to 9,999,999,999 attachments, which are kept in memory until
  they all arrive.
- A threaded websocket frame that does not decode: gunicorn logs "Error handling request" with a traceback (the
  session then ends at its ping timeout); the `shared` transport closes such connections itself.
- Client-caused errors python-engineio logs once at ERROR (bad EIO version, unknown transport, foreign origin).

`install_malformed_input_guards` answers the first three itself and brings the log lines of the last two to one
WARNING without a traceback.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from engineio import packet as eio_packet
from engineio import payload as eio_payload
from flask import Flask
from socketio import packet as sio_packet

from integration import socket_observers
from integration.decoded_packets import reuse
from integration.library_texts import ENGINEIO_PACKET_MODULE, LOG_ONCE_SUFFIX
from utils.socket_guard import query_sid

log = logging.getLogger(__name__)

# Engine.IO packets a client may send over polling; python-engineio raises on the others (see module docstring).
CLIENT_PACKET_TYPES = frozenset({eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE})
CLIENT_SOCKETIO_TYPES = frozenset({sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK,
                                   sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK})
# Signalboard carries JSON only; a binary event gets its error ack from the hub, but no client needs more parts.
MAX_ATTACHMENTS = 10

_BAD_REQUEST = json.dumps({"code": 3, "message": "Bad request"}).encode()
_TOO_LARGE = json.dumps({"code": 3, "message": "Payload too large"}).encode()


def polling_payload_problem(body: bytes) -> str | None:
    """Why python-engineio could not handle this polling POST body, or None when it can."""
    try:
        text = body.decode("utf-8")
        packets = eio_payload.Payload(encoded_payload=text).packets
    except UnicodeDecodeError:
        return "payload is not UTF-8"
    # ValueError: bad type digit, empty packet, bad base64, too many packets; KeyError: a JSONP body without d=;
    # RecursionError: JSON nested deeper than the decoder goes.
    except (ValueError, IndexError, KeyError, RecursionError):
        return "undecodable payload"
    for pkt in packets:
        if pkt.packet_type not in CLIENT_PACKET_TYPES:
            return f"packet type {pkt.packet_type} is not sent by clients"
    return None


def _close_session(engineio_server: Any, socket: Any) -> None:
    # wait=False: nobody will drain this socket's queue (see the module docstring).
    socket.close(wait=False, abort=True, reason=engineio_server.reason.TRANSPORT_ERROR)
    engineio_server.sockets.pop(socket.sid, None)


class PollingPayloadCheck:
    """WSGI middleware: checks a polling POST for an open session before python-engineio reads it."""

    def __init__(self, wsgi_app: Callable, engineio_server: Any, path: str = "/socket.io/") -> None:
        self.wsgi_app = wsgi_app
        self.engineio_server = engineio_server
        self.path = path

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or not environ.get("PATH_INFO", "").startswith(self.path):
            return self.wsgi_app(environ, start_response)
        sid = query_sid(environ)
        socket = self.engineio_server.sockets.get(sid) if sid else None
        if socket is None or socket.closed or not socket.connected or socket.upgraded:
            return self.wsgi_app(environ, start_response)  # the socket guard and Engine.IO answer these correctly
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length > self.engineio_server.max_http_buffer_size:
            return self._refuse(environ, start_response, socket, "413 REQUEST ENTITY TOO LARGE", _TOO_LARGE,
                                f"polling payload of {length} bytes is over MAX_HTTP_BUFFER_SIZE")
        if length < 0:
            return self._refuse(environ, start_response, socket, "400 BAD REQUEST", _BAD_REQUEST,
                                "invalid Content-Length")
        body = environ["wsgi.input"].read(length)
        problem = polling_payload_problem(body)
        if problem:
            return self._refuse(environ, start_response, socket, "400 BAD REQUEST", _BAD_REQUEST, problem)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.wsgi_app(environ, start_response)

    def _refuse(self, environ: dict, start_response: Callable, socket: Any, status: str, body: bytes,
                problem: str) -> list[bytes]:
        log.warning("closing Engine.IO session %s from %s: %s", socket.sid, environ.get("REMOTE_ADDR"), problem)
        _close_session(self.engineio_server, socket)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def socketio_packet_problem(data: Any, binary_pending: bool, joined: Callable[[str], bool] = lambda namespace: True,
                            ) -> tuple[str | None, sio_packet.Packet | None]:
    """Why python-socketio could not handle this Engine.IO message (None when it can), and the packet decoded from
    it (None for a binary attachment or an undecodable text).

    `joined(namespace)` tells whether the client has connected to that namespace: python-socketio raises on a binary
    packet for any other."""
    if binary_pending:
        return (None if isinstance(data, bytes) else "a text packet arrived where a binary attachment was due"), None
    if not isinstance(data, str):
        return "a binary attachment arrived without a binary packet announcing it", None
    try:
        pkt = sio_packet.Packet(encoded_packet=data)
    # ValueError covers malformed JSON; TypeError and IndexError an empty or truncated header; RecursionError JSON
    # nested deeper than the decoder goes.
    except (ValueError, TypeError, IndexError, RecursionError):
        return "undecodable Socket.IO packet", None
    return _packet_problem(pkt, joined), pkt


def _packet_problem(pkt: sio_packet.Packet, joined: Callable[[str], bool]) -> str | None:
    if pkt.packet_type not in CLIENT_SOCKETIO_TYPES:
        return f"Socket.IO packet type {pkt.packet_type} is not sent by clients"
    if pkt.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
        if not isinstance(pkt.data, list) or not pkt.data or not isinstance(pkt.data[0], str):
            return "an event must be a list starting with its name"
    elif pkt.packet_type in (sio_packet.ACK, sio_packet.BINARY_ACK) and not isinstance(pkt.data, list):
        return "an ack must be a list"
    if pkt.packet_type in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK) and \
            not 1 <= pkt.attachment_count <= MAX_ATTACHMENTS:
        return f"binary packet announces {pkt.attachment_count} attachments (1 to {MAX_ATTACHMENTS} allowed)"
    if pkt.packet_type in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK) and not joined(pkt.namespace or "/"):
        return "a binary packet for a namespace the client has not connected to"
    return None


def socketio_message_guard(socketio_server: Any) -> Callable[[str, Any, Callable[[], Any]], Any]:
    """The message guard (integration/observers.py) that closes a session sending malformed Socket.IO packets."""
    eio = socketio_server.eio

    def joined(eio_sid: str) -> Callable[[str], bool]:
        return lambda namespace: socketio_server.manager.sid_from_eio_sid(eio_sid, namespace) is not None

    def guard(eio_sid: str, data: Any, deliver: Callable[[], Any]) -> Any:
        socket = eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return None  # closed for an earlier packet of the same polling payload, whose one line is logged
        # sid -> packet waiting for its attachments; integration/pins.py checks python-socketio still keeps it there.
        pending = socketio_server._binary_packet
        binary_pending = eio_sid in pending
        problem, pkt = socketio_packet_problem(data, binary_pending, joined(eio_sid))
        if problem is None and pkt is not None:
            with reuse(data, pkt):  # python-socketio takes this packet instead of decoding the text again
                return deliver()
        if problem is None and not binary_pending:
            return deliver()
        if problem is None:
            try:  # the last attachment rebuilds the event, where a lying placeholder number fails
                return deliver()
            except (ValueError, IndexError, KeyError, TypeError):
                pending.pop(eio_sid, None)
                problem = "binary attachments do not match their placeholders"
        log.warning("closing Engine.IO session %s: %s", eio_sid, problem)
        _close_session(eio, socket)
        return None

    return guard


class ClientErrorLogFilter(logging.Filter):
    """One WARNING line, without a traceback, for errors a client caused (python-engineio logs them at ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.name == "engineio.server" and isinstance(record.msg, str) and record.msg.endswith(LOG_ONCE_SUFFIX):
            record.msg = record.msg[: -len(LOG_ONCE_SUFFIX)].rstrip()
        elif record.name == "gunicorn.error" and record.exc_info and _raised_by_engineio_decoder(record.exc_info):
            record.msg, record.args = "closed a websocket that sent an undecodable Engine.IO packet: %s", (
                record.exc_info[1],)
            record.exc_info, record.exc_text = None, None
        else:
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _raised_by_engineio_decoder(exc_info: Any) -> bool:
    if not exc_info or not isinstance(exc_info[1], ValueError):
        return False
    tb = exc_info[2]
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(ENGINEIO_PACKET_MODULE)


def install_malformed_input_guards(app: Flask, socketio_server: Any) -> None:
    """Put every guard above in place for `app`; call once, after the socket guard is installed."""
    app.wsgi_app = PollingPayloadCheck(app.wsgi_app, socketio_server.eio)  # type: ignore[method-assign]
    socket_observers(app).set_message_guard(socketio_message_guard(socketio_server))
    for name in ("engineio.server", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
            logger.addFilter(ClientErrorLogFilter())
