"""Every reach into python-engineio, python-socketio, simple-websocket and gunicorn internals, owned in one place.

`install_integration` is called once by the factory (extensions.init_socketio): it binds the shared SocketIO to
the app and installs the hooks below in this order; each hook says in one line what it replaces and why.
Feature code never touches a library's handler dicts: it registers observers (`on_connect`, `on_disconnect`,
`on_message`, `on_emit`, integration/observers.py documents their order and exception policy) with
`socket_observers(app)`. integration/pins.py pins the library versions and checks every internal listed here, in
every mode, at start-up and in the unit tests.

The hooks (what each replaces and why is said again where it is written; integration/pins.py checks every internal):

Installed by `install_integration`, in this order:
1. pin and internals check (pins.py): the versions and every internal below, before anything touches one.
2. client manager (manager.py, redis_manager.py), chosen before the server is built
   (`socketio.init_app(client_manager=...)`): subclasses of python-socketio's `Manager` / `RedisManager` that
   serialize the six membership methods (`connect`, `pre_disconnect`, `basic_disconnect`, `basic_enter_room`,
   `basic_leave_room`, `basic_close_room`) and, with Redis, override `_redis_connect`, `_listen`, `_publish`,
   run `_thread` again, read `rooms`, file markers with `_generate_ack_id` in `callbacks`, and write its pub/sub
   packet format (pubsub_packets.py, also written by the Lua in hub/redis_history.py). Right after the binding,
   event_contexts.py replaces Flask's `create_url_adapter` on the app for the Engine.IO path: the request context
   Flask-SocketIO's `_handle_event` pushes for every Socket.IO event skips URL matching.
3. lifecycle dispatchers (lifecycle.py): python-engineio's `handlers` slots connect/message/disconnect (filled by
   python-socketio) and python-socketio's `Server.emit`, so observers replace every rewrap.
4. websocket transport adopter (websocket_transport.py), called from the connect dispatcher: a live `__class__`
   swap of each new `engineio.socket.Socket`, whose `queue` is already the bounded kind (`Server.create_queue`
   replaced) and gets its bound (bounded_sockets.py: queue.Queue's `_put`/`_get`/`mutex`/`unfinished_tasks`,
   `Socket._websocket_handler`, simple-websocket's `ws.sock`), or with `shared` the loop's socket
   (shared_sockets.py: `Socket.schedule_ping` instead of the `_send_ping` thread, `_upgrade_websocket`,
   `Server._bad_request`, `_trigger_event(..., run_async=False)`, python-socketio's `Server.start_background_task`
   for an event already in its own thread, gunicorn gthread's StopIteration and the descriptor it closes; then
   session_environ.py trims the environ python-socketio keeps in `Server.environ[eio_sid]`).
   Before it, session_counts.py puts a counting dict in python-engineio's `Server.sockets` (filled by
   `self.sockets[sid] = s`, emptied by `del`/`pop`) and the adopted classes turn `closed`/`upgraded` into
   properties that move the counts: admission reads them on every handshake instead of walking every session.
5. message guard slot, filled by utils/malformed_input.py: reads python-socketio's `_binary_packet`; and
   decoded_packets.py replaces python-socketio's `Server.packet_class` on the instance, so `_handle_eio_message`
   takes the packet the guard decoded instead of decoding the same text again.
6. inbound gate, in the adopted socket classes: `Socket.receive` (bounded_sockets.py) and the shared loop's
   receive check each client packet (transport/inbound.py) before python-engineio starts a handler thread for it;
   python-socketio's per-packet "not connected to namespace" warning is brought to DEBUG, and its namespace test
   (`serves_namespace`) answers unknown namespaces as the Node reference does.

Part of both managers (2.): the broadcast fast path (broadcast.py) replaces python-socketio's `Manager.emit` for
emits without a callback: frames appended straight to each shared-loop websocket of the room, one flush request
for all of them; every other recipient keeps `_send_eio_packet`.

Used by the log filters in utils/ (library_texts.py): python-engineio's gone-session KeyError texts, its "Cannot
send to sid" warning, its log-once suffix, the module its decoder raises from and its writer thread's name.

Installed by gunicorn.conf.py `post_worker_init` in the worker (the factory also runs in tests, outside gunicorn):
gunicorn_errors.py replaces `gunicorn.util.write_error` so gunicorn's own refusals answer in our JSON shape;
gunicorn_keepalive.py replaces `gunicorn.http.wsgi.Response.should_close` so an answer that leaves more body unread
than gunicorn drains (`parser._DRAIN_MAX_BYTES`, read through `LengthReader.length`) says `Connection: close`;
gunicorn_descriptors.py replaces gthread's `ThreadWorker.accept` (out of descriptors it answers 503 instead of
raising EMFILE out of the worker's loop) and `TConn.wait_for_data` (poll(2) instead of a selector per connection).
Called by the drain (utils/drain.py) in the worker: gunicorn_listeners.py closes gthread's listeners (`sockets`,
`set_accept_enabled`, on the loop thread through `method_queue.defer`) when the drain's notice ends, not at exit.

Named by gunicorn.conf.py's `worker_class`: request_reader.py subclasses gunicorn gthread's `ThreadWorker`
(`accept`, `enqueue_req`, `handle`, `murder_pending`, `TConn`, the parser's `Unreader`) so request heads and bodies
are read on the poller, never in the thread pool (slow requests, per-address connection cap); its `accept`
keeps gunicorn_descriptors.py's answer when out of descriptors; a direct websocket handshake is served on the
poller itself, a few per turn of its loop (`wait_for_and_dispatch_events`; `handle`, then `finish_request`
with a done future; `negotiation.prior_knowledge_allowed`).

Used by the SSE stream (transport/sse.py): room_taps.py makes streams members of python-socketio's rooms, fed by
broadcast.py's local emit; stream_takeover.py (WSGI middleware) hands a stream's connection from gunicorn to the
shared loop with gthread's StopIteration, like shared_sockets.py.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from integration.broadcast import BroadcastManager
from integration.decoded_packets import install_decoded_packets
from integration.event_contexts import unrouted_event_contexts
from integration.lifecycle import install_lifecycle
from integration.manager import build_client_manager
from integration.observers import SocketObservers
from integration.pins import LibraryVersionError, check_libraries
from integration.session_counts import install_session_counts
from integration.shared_sockets import inline_event_handlers
from integration.websocket_transport import build_transport
from transport.inbound import InboundPolicy, install_not_connected_filter

__all__ = ["LibraryVersionError", "SocketObservers", "install_integration", "socket_observers"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "socket_observers"


def install_integration(app: Flask, socketio: SocketIO, **socketio_options: Any) -> SocketObservers:
    """Bind `socketio` to `app` with `socketio_options` and install every hook, in the order of the module docstring."""
    # 1. Before anything touches an internal: refuse to start on libraries the hooks were not written for.
    check_libraries()
    # 2. The client manager, chosen once: the server is built with it, nothing is replaced later (and a second app
    #    in the same process never inherits the first one's, as Flask-SocketIO would keep a message_queue manager).
    start_task = app.extensions["background_tasks"].start  # every background task stops with the drain
    socketio.init_app(app, client_manager=build_client_manager(app.config, start_task), **socketio_options)
    unrouted_event_contexts(app)  # Socket.IO events' request contexts skip Flask's URL matching
    server = socketio.server
    observers = app.extensions[EXTENSION_KEY] = SocketObservers()
    # 3. One dispatcher per Engine.IO handler slot and around Server.emit; everything below goes through them.
    install_lifecycle(server, observers)
    # 4. The websocket transport adopts each new socket first thing at connect (before python-socketio's handler).
    #    Each adopted socket checks client packets with the inbound gate before a handler thread is spent, and keeps
    #    the session counts admission reads on every handshake true.
    install_session_counts(server.eio)
    inbound = InboundPolicy(app.config["CLIENT_RATE_LIMIT"], app.config["CLIENT_RATE_BURST"],
                            app.config["CLIENT_FLOOD_REFUSALS"], lambda namespace: serves_namespace(server, namespace))
    transport, adopter = build_transport(server.eio, app.config["WEBSOCKET_TRANSPORT"],
                                         app.config["WEBSOCKET_SEND_BUFFER"], start_task, inbound)
    observers.set_adopter(adopter)
    if transport is not None and isinstance(server.manager, BroadcastManager):
        server.manager.use_shared_transport(transport.direct, transport.loop)  # the broadcast fast path
    if transport is not None:
        inline_event_handlers(server)  # one thread per event from a shared-loop websocket, not two
    install_not_connected_filter()
    app.extensions["websocket_transport"] = transport
    # 5. The message guard slot is filled by utils/malformed_input.py (register_error_handlers in app.py);
    #    python-socketio takes the packet the guard decoded instead of decoding the message again.
    install_decoded_packets(server)
    log.debug("library hooks installed (%s websocket transport)", app.config["WEBSOCKET_TRANSPORT"])
    return observers


def serves_namespace(server: Any, namespace: str) -> bool:
    """python-socketio's own test in Server._handle_connect (integration/pins.py checks it)."""
    return (namespace in server.handlers or namespace in server.namespace_handlers or server.namespaces == "*"
            or namespace in server.namespaces)


def socket_observers(app: Flask) -> SocketObservers:
    """The observer lists of `app`'s Socket.IO server; feature code registers its observers here."""
    return app.extensions[EXTENSION_KEY]
