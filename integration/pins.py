"""The library versions integration/ was written against, and a check of every internal its hooks rely on.

Every hook in this package reaches into a library's internals (see integration/__init__.py for the list). Those are
not APIs: a silent change could leak sockets, drop messages or hide errors. So start-up refuses, in every mode
(both WEBSOCKET_TRANSPORT values, with and without REDIS_URL), to run on other versions than these, with one line
naming the library; tests/unit/test_integration_pins.py runs the same checks. README "Upgrading a pinned library"
says how to move a pin.
"""

from __future__ import annotations

import ast
import inspect
import queue
import re
import sys
import textwrap
from importlib import metadata

from integration import library_texts, pubsub_packets

PINNED_VERSIONS = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "simple-websocket": "1.1.0",
    "gunicorn": "27.0.1",
    "wsproto": "1.3.2",
    "flask": "3.1.3",
    "flask-socketio": "5.7.0",
}

UPGRADE_ADVICE = ("check the hooks against it with `.venv/bin/pytest tests/unit/test_integration_pins.py "
                  "tests/transport` and update integration/pins.py (README: Upgrading a pinned library), "
                  "or install the expected version")


class LibraryVersionError(RuntimeError):
    """An installed library is not the version (or does not have the internals) integration/ was written for."""


def version_mismatches() -> list[str]:
    """One phrase per installed library whose version is not the pinned one."""
    problems = []
    for name, pinned in PINNED_VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            problems.append(f"{name} {installed} is installed, integration/ expects {pinned}")
    return problems


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def _params(obj: object) -> list[str]:
    return list(inspect.signature(obj).parameters)  # type: ignore[arg-type]


def _in_order(source: str, *parts: str) -> bool:
    positions = [source.find(part) for part in parts]
    return -1 not in positions and positions == sorted(positions)


def _log_once_suffix(log_error_once: object) -> str:
    """The text python-engineio appends to a message it logs once: the string literals after `message + `."""
    source = _source(log_error_once)
    start = source.find("self.logger.error(message + ")
    call = source[start:source.find("\n", source.find("'", source.find("\n", start) + 1))] if start >= 0 else ""
    return "".join(re.findall(r"'([^']*)'", call)).strip()


def _dict_keys(function: object, method: str) -> tuple[str, ...]:
    """The keys of the dict literal with {'method': `method`, ...} in `function`'s source."""
    for node in ast.walk(ast.parse(textwrap.dedent(_source(function)))):
        if isinstance(node, ast.Dict) and node.keys and isinstance(node.keys[0], ast.Constant) \
                and node.keys[0].value == "method" and isinstance(node.values[0], ast.Constant) \
                and node.values[0].value == method:
            return tuple(str(key.value) for key in node.keys if isinstance(key, ast.Constant))
    return ()


def _lua_emit_keys(lua: str) -> tuple[str, ...]:
    """The JSON keys hub/redis_history.py's Lua `emit_packet` writes, in order (its meta object left out)."""
    body = lua[lua.index("local function emit_packet"):]
    body = body[body.index("return "):body.index("\nend")]
    return tuple(re.findall(r'[{,]"(\w+)":', body))


def _sessions_changed_only_by_item(*classes: type) -> bool:
    """Every change python-engineio makes to `self.sockets` is `self.sockets[...] = `, `del self.sockets[...]` or a
    fresh dict: what integration/session_counts.CountedSessions counts."""
    for cls in classes:
        source = _source(cls)
        for call in re.findall(r"self\.sockets\.(\w+)\(", source):
            if call not in ("copy", "get", "values", "items", "keys"):
                return False
    return True


def internal_mismatches() -> list[str]:
    """One phrase per library internal a hook relies on that is not as the hook was written for."""
    import flask_socketio
    from engineio import base_server as eio_base_server
    from engineio import base_socket, packet
    from engineio import middleware as eio_middleware
    from engineio import server as eio_server
    from engineio import socket as eio_socket
    from flask import app as flask_app
    from flask import ctx as flask_ctx
    from gunicorn import arbiter as gunicorn_arbiter
    from gunicorn import util as gunicorn_util
    from gunicorn.http import body as gunicorn_body
    from gunicorn.http import parser as gunicorn_parser
    from gunicorn.http import unreader as gunicorn_unreader
    from gunicorn.http import wsgi as gunicorn_wsgi
    from gunicorn.http2 import negotiation as gunicorn_negotiation
    from gunicorn.workers import base as gunicorn_base
    from gunicorn.workers import gthread
    from simple_websocket import ws as simple_websocket_ws
    from socketio import base_manager, manager, pubsub_manager, redis_manager
    from socketio import base_server as sio_base_server
    from socketio import packet as sio_packet
    from socketio import server as sio_server
    from wsproto import connection as ws_connection

    from hub import redis_history

    eio_connect = _source(eio_server.Server._handle_connect)
    sio_connect = _source(sio_server.Server._handle_connect)
    checks = [
        # --- lifecycle.py: the handler slots and emit ---
        (_in_order(_source(sio_base_server.BaseServer.__init__), "self.eio.on('connect', self._handle_eio_connect)",
                   "self.eio.on('message', self._handle_eio_message)",
                   "self.eio.on('disconnect', self._handle_eio_disconnect)"),
         "socketio BaseServer.__init__ fills the Engine.IO connect/message/disconnect slots"),
        ("self.handlers[event](*args)" in _source(eio_server.Server._trigger_event),
         "engineio Server._trigger_event calls handlers[event](*args)"),
        (_params(sio_server.Server.emit) == ["self", "event", "data", "to", "room", "skip_sid", "namespace",
                                             "callback", "ignore_queue"],
         "socketio Server.emit(event, data, to, room, skip_sid, namespace, callback, ignore_queue)"),
        (_in_order(eio_connect, "s = socket.Socket(self, sid)", "self._trigger_event('connect'", "s.schedule_ping()"),
         "engineio Server._handle_connect creates the socket, then fires 'connect', then schedules the ping"),
        # --- session_counts.py: the sessions dict and the two flags it counts by ---
        (_in_order(eio_connect, "s = socket.Socket(self, sid)", "self.sockets[sid] = s",
                   "self._trigger_event('connect'")
         and "self.closed = True" in _source(eio_socket.Socket.close)
         and _sessions_changed_only_by_item(eio_server.Server, eio_base_server.BaseServer),
         "engineio Server registers a session with sockets[sid] = s before 'connect' and removes it only with "
         "del sockets[sid] (or a fresh dict); Socket.close sets closed = True"),
        # --- shared_sockets.inline_event_handlers: the per-event thread python-socketio starts ---
        ("self.start_background_task(self._handle_event_internal, self, sid,\n"
         in _source(sio_server.Server._handle_event)
         and _params(sio_server.Server._handle_event_internal) == ["self", "server", "sid", "eio_sid", "data",
                                                                   "namespace", "id"],
         "socketio Server._handle_event starts _handle_event_internal(server, sid, eio_sid, data, namespace, id) with "
         "start_background_task and keeps nothing it returns"),
        # --- bounded_sockets.create_queues: the one caller of Server.create_queue on the server side ---
        ("self.queue = self.server.create_queue()" in _source(base_socket.BaseSocket.__init__)
         and "create_queue(" not in _source(eio_server.Server) and "create_queue(" not in _source(eio_socket.Socket)
         and _source(eio_base_server.BaseServer).count("create_queue(") == 1,
         "engineio BaseSocket.__init__ makes its queue with server.create_queue(), nothing else on the server side "
         "calls it"),
        # --- sockets.py / the shared transport: the socket class we adopt and what it overrides ---
        (_params(base_socket.BaseSocket.__init__) == ["self", "server", "sid"],
         "engineio BaseSocket.__init__(self, server, sid)"),
        (all(f"self.{flag} = " in _source(base_socket.BaseSocket.__init__)
             for flag in ("queue", "last_ping", "connected", "upgrading", "upgraded", "closing", "closed")),
         "engineio BaseSocket sets queue/last_ping/connected/upgrading/upgraded/closing/closed"),
        (_params(eio_socket.Socket._websocket_handler) == ["self", "ws"]
         and "ws.send(pkt.encode())" in _source(eio_socket.Socket._websocket_handler)
         and "self.sock = " in _source(simple_websocket_ws.Base.__init__),
         "engineio Socket._websocket_handler(self, ws) writes with ws.send; simple-websocket keeps its socket in "
         "ws.sock"),
        (_params(eio_socket.Socket._upgrade_websocket) == ["self", "environ", "start_response"],
         "engineio Socket._upgrade_websocket(self, environ, start_response)"),
        (_params(eio_base_server.BaseServer._bad_request) == ["self", "message"],
         "engineio Server._bad_request(self, message)"),
        ("run_async = kwargs.pop('run_async', False)" in _source(eio_server.Server._trigger_event),
         "engineio Server._trigger_event takes run_async="),
        ("self.server.start_background_task(self._send_ping)" in _source(eio_socket.Socket.schedule_ping),
         "engineio Socket.schedule_ping starts a thread running _send_ping"),
        ("self.last_ping = time.time()" in _source(eio_socket.Socket._send_ping),
         "engineio Socket._send_ping sets last_ping before sending PING"),
        ("self.queue.put(pkt)" in _source(eio_socket.Socket.send),
         "engineio Socket.send puts packets on self.queue"),
        ("self.queue.put(None)" in _source(eio_socket.Socket.close)
         and "self.queue.join()" in _source(eio_socket.Socket.close),
         "engineio Socket.close ends the writer with queue.put(None) and waits with queue.join()"),
        ("self.upgrading or self.upgraded" in _source(eio_socket.Socket.handle_get_request),
         "engineio Socket.handle_get_request answers NOOP while upgrading or upgraded"),
        ("self.server._trigger_event('message', self.sid, pkt.data,\n" in _source(eio_socket.Socket.receive),
         "engineio Socket.receive hands a MESSAGE to _trigger_event('message', sid, data, run_async=...)"),
        (_in_order(sio_connect, "packet.CONNECT, {'sid': sid}", "self.manager.connect(sid, namespace)")
         or _in_order(sio_connect, "self.manager.connect(eio_sid, namespace)", "packet.CONNECT, {'sid': sid}"),
         "socketio Server._handle_connect answers CONNECT (the shared transport gates messages around it)"),
        (_in_order(sio_connect, "sid = self.manager.pre_connect(eio_sid, namespace)", "self.environ[eio_sid]")
         and "del self.environ[eio_sid]" in _source(sio_server.Server._handle_eio_disconnect),
         "socketio Server._handle_connect reads self.environ[eio_sid] after manager.pre_connect; "
         "_handle_eio_disconnect deletes it (lifecycle.py's connect race)"),
        (not hasattr(packet.Packet, "__slots__"), "engineio Packet instances accept extra attributes"),
        ("eio_pkt = [eio_packet.Packet(" in _source(manager.Manager.emit)
         and "self.server._send_eio_packet(eio_sid, p)" in _source(manager.Manager.emit),
         "socketio Manager.emit sends one shared Engine.IO packet object to every recipient"),
        # --- broadcast.py: Manager.emit rebuilt for shared websockets ---
        (_in_order(_source(manager.Manager.emit), "pkt = self.server.packet_class(",
                   "packet.EVENT, namespace=namespace, data=[event] + data)", "encoded_packet = pkt.encode()",
                   "eio_pkt = [eio_packet.Packet(eio_packet.MESSAGE, p)",
                   "for sid, eio_sid in self.get_participants(namespace, room):", "if sid not in skip_sid:")
         and _params(base_manager.BaseManager.get_participants) == ["self", "namespace", "room"]
         and "self.eio.send_packet(eio_sid, eio_pkt)" in _source(sio_server.Server._send_eio_packet)
         and "super().emit(message['event'], data," in _source(pubsub_manager.PubSubManager._handle_emit)
         and "s.check_ping_timeout()" in _source(eio_server.Server._service_task),
         "socketio Manager.emit builds one packet per encoded part and walks get_participants(namespace, room) "
         "with skip_sid; _send_eio_packet sends through eio.send_packet; PubSubManager._handle_emit calls "
         "super().emit; engineio's service task checks every session's ping timeout"),
        # The queue.Queue internals the bounded and sink queues rewrite (Python's own queue module).
        (all(part in _source(queue.Queue.put) for part in ("self._put(item)", "self.unfinished_tasks += 1",
                                                         "self.not_empty.notify()"))
         and "self._get()" in _source(queue.Queue.get) and "self.mutex = " in _source(queue.Queue.__init__),
         "queue.Queue.put/get go through _put/_get under self.mutex and count unfinished_tasks"),
        # An unbounded queue never waits on not_full: BoundedSendQueue makes it the not_empty Condition.
        ("if self.maxsize > 0:" in _source(queue.Queue.put) and "self.not_full.notify()" in _source(queue.Queue.get)
         and "self.not_full.wait(" not in _source(queue.Queue.get),
         "queue.Queue.put waits on not_full only with a maxsize; get only notifies it"),
        # --- session_environ.py: the environ python-socketio keeps per session is a copy only it holds ---
        ("self.environ[eio_sid] = environ" in _source(sio_server.Server._handle_eio_connect)
         and "environ = environ.copy()" in _source(flask_socketio._SocketIOMiddleware.__call__)
         and "environ['eventlet.input'] = Input(environ['gunicorn.socket'])"
         in _source(eio_middleware.WSGIApp.__call__),
         "socketio Server keeps each session's environ (Flask-SocketIO's copy of the request's); engineio's "
         "middleware wraps gunicorn.socket in eventlet.input"),
        # --- the malformed-input guard ---
        ("self._binary_packet = {}" in _source(sio_base_server.BaseServer.__init__)
         and "self._binary_packet[eio_sid]" in _source(sio_server.Server._handle_eio_message),
         "socketio Server keeps packets waiting for attachments in _binary_packet[eio_sid]"),
        # --- the manager: membership lock and the Redis cluster manager ---
        (all(callable(getattr(manager.Manager, name, None)) for name in (
            "connect", "pre_disconnect", "basic_disconnect", "basic_enter_room", "basic_leave_room",
            "basic_close_room")),
         "socketio Manager has connect/pre_disconnect/basic_disconnect/basic_enter_room/basic_leave_room/"
         "basic_close_room"),
        ("self.sockets = {}" in _source(eio_base_server.BaseServer.__init__)
         and "self.namespace_handlers = {}" in _source(sio_base_server.BaseServer.__init__),
         "engineio Server keeps its sessions in sockets[sid]; socketio Server its namespaces in namespace_handlers"),
        ("self.rooms = {}" in _source(base_manager.BaseManager.__init__)
         and "self.callbacks = {}" in _source(base_manager.BaseManager.__init__)
         and _params(base_manager.BaseManager._generate_ack_id) == ["self", "sid", "callback"],
         "socketio BaseManager keeps rooms[namespace][room], callbacks[sid][id] and _generate_ack_id(sid, callback)"),
        (_params(redis_manager.RedisManager._redis_connect) == ["self"]
         and "self.connected = True" in _source(redis_manager.RedisManager._redis_connect)
         and "self.thread = self.server.start_background_task(self._thread)"
         in _source(pubsub_manager.PubSubManager.initialize)
         and "except Exception:  # pragma: no cover" in _source(pubsub_manager.PubSubManager._thread)
         and "except BaseException" not in _source(pubsub_manager.PubSubManager._thread),
         "socketio RedisManager._redis_connect sets connected; PubSubManager.initialize runs _thread as self.thread "
         "(ClusterQueueManager.initialize does the same as a drain task); _thread retries on Exception only, so the "
         "listener's stop (a BaseException) ends it"),
        (_dict_keys(pubsub_manager.PubSubManager.emit, "emit") == pubsub_packets.EMIT_KEYS
         and _dict_keys(pubsub_manager.PubSubManager._return_callback, "callback") == pubsub_packets.CALLBACK_KEYS
         and "for message in self._listen():" in _source(pubsub_manager.PubSubManager._thread)
         and "if data['method'] == 'callback':" in _source(pubsub_manager.PubSubManager._thread)
         and "BaseException" not in _source(pubsub_manager.PubSubManager._thread)
         and all(f"message['{key}']" in _source(pubsub_manager.PubSubManager._handle_callback)
                 for key in ("sid", "id", "args")),
         "socketio PubSubManager's packet format (integration/pubsub_packets.py EMIT_KEYS, CALLBACK_KEYS) and its "
         "_thread reading _listen()"),
        (_lua_emit_keys(redis_history._LUA_HELPERS) == pubsub_packets.EMIT_KEYS,
         "hub/redis_history.py's Lua emit_packet writes integration/pubsub_packets.py EMIT_KEYS in order"),
        # --- gunicorn ---
        ("util.write_error(client, status_int, reason, mesg)" in _source(gunicorn_base.Worker.handle_error)
         and _params(gunicorn_util.write_error) == ["sock", "status_int", "reason", "mesg"],
         "gunicorn Worker.handle_error answers through util.write_error(sock, status_int, reason, mesg)"),
        ("self.must_close or self.req.should_close()" in _source(gunicorn_wsgi.Response.should_close)
         and "self.should_close()" in _source(gunicorn_wsgi.Response.default_headers)
         and "self.length = length" in _source(gunicorn_body.LengthReader.__init__)
         and _in_order(_source(gunicorn_body.ChunkedReader.read), "except StopIteration:", "self.parser = None")
         and "max_bytes = _DRAIN_MAX_BYTES" in _source(gunicorn_parser.Parser.finish_body),
         "gunicorn Response.should_close decides header and close; LengthReader.length counts the unread body; "
         "ChunkedReader.parser is None once the body is read; "
         "Parser.finish_body drains at most _DRAIN_MAX_BYTES"),
        ("client_sock, client_addr = listener.accept()" in _source(gthread.ThreadWorker.accept)
         and _in_order(_source(gthread.ThreadWorker.accept), "listener.accept()", "self.nr_conns += 1",
                       "if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):", "raise")
         and "self.poller.register(listener, selectors.EVENT_READ, self.accept)"
         in _source(gthread.ThreadWorker.set_accept_enabled)
         and _in_order(_source(gunicorn_base.Worker.init_process), "self.cfg.post_worker_init(self)", "self.run()"),
         "gunicorn gthread ThreadWorker.accept re-raises EMFILE before counting the connection; set_accept_enabled "
         "registers self.accept, looked up after post_worker_init"),
        # --- the draining worker's listeners (gunicorn_listeners.py) ---
        (_in_order(_source(gthread.ThreadWorker.set_accept_enabled), "if enabled == self._accepting:",
                   "for listener in self.sockets:", "self.poller.unregister(listener)", "self._accepting = enabled")
         and _params(gthread.PollableMethodQueue.defer) == ["self", "callback", "args"]
         and _in_order(_source(gthread.ThreadWorker.run), "self.method_queue.run_callbacks",
                       "self.set_accept_enabled(can_accept)", "for s in self.sockets:")
         and _in_order(_source(gunicorn_arbiter.Arbiter.stop), "sock.close_sockets(self.LISTENERS, unlink)",
                       "self.kill_workers(sig)"),
         "gunicorn gthread set_accept_enabled registers self.sockets as _accepting says; method_queue.defer runs a "
         "callback on the loop thread; Arbiter.stop closes its listeners before it signals the workers"),
        (_params(gthread.TConn.wait_for_data) == ["self", "timeout"]
         and all(part in _source(gthread.TConn.wait_for_data) for part in (
             "if self.data_ready:", "sel = selectors.DefaultSelector()",
             "sel.register(self.sock, selectors.EVENT_READ)", "self.data_ready = True",
             "except (OSError, ValueError):")),
         "gunicorn gthread TConn.wait_for_data(timeout) waits for self.sock with a selector and sets data_ready"),
        ("except StopIteration" in _source(gthread.ThreadWorker.handle),
         "gunicorn gthread ThreadWorker.handle treats StopIteration as 'connection taken over'"),
        ("sock.shutdown(socket.SHUT_WR)" in _source(gunicorn_util.close_graceful)
         and "except OSError:\n            return" in _source(gunicorn_util.close_graceful),
         "gunicorn util.close_graceful gives up quietly when shutdown() fails"),
        # --- the request reader (integration/request_reader.py): the gthread worker methods it replaces or extends ---
        ("conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())"
         in _source(gthread.ThreadWorker.accept)
         and "self.nr_conns += 1" in _source(gthread.ThreadWorker.accept),
         "gunicorn gthread ThreadWorker.accept counts nr_conns and builds TConn(cfg, sock, addr, server)"),
        ("self.enqueue_req(conn)" in _source(gthread.ThreadWorker.on_client_socket_readable)
         and "self.enqueue_req(conn)" in _source(gthread.ThreadWorker.finish_request)
         and "conn.parser.unreader.buf.getvalue()" in _source(gthread.ThreadWorker.finish_request),
         "gunicorn gthread hands kept-alive and read-ahead connections to the pool through enqueue_req"),
        (_in_order(_source(gthread.ThreadWorker.run), "self.murder_keepalived()", "self.murder_pending()")
         and "conn.close()" in _source(gthread.ThreadWorker.finish_request),
         "gunicorn gthread ThreadWorker.run calls murder_pending every turn; finish_request closes with conn.close"),
        ("if not conn.initialized and not conn.data_ready:" in _source(gthread.ThreadWorker.handle)
         and "conn.init()" in _source(gthread.ThreadWorker.handle)
         and "self.parser = http.get_parser(self.cfg, self.sock, self.client)" in _source(gthread.TConn.init),
         "gunicorn gthread ThreadWorker.handle skips its data wait when data_ready; TConn.init makes the parser"),
        (_params(gthread.ThreadWorker.finish_request) == ["self", "conn", "fs"]
         and "result = fs.result() if not fs.cancelled() else False" in _source(gthread.ThreadWorker.finish_request)
         and "self.method_queue.defer(self.finish_request, conn, fut)" in _source(gthread.ThreadWorker.enqueue_req)
         and _params(gunicorn_negotiation.prior_knowledge_allowed) == ["cfg", "peer_addr"]
         and "negotiation.read_preface_blocking(self.sock)" in _source(gthread.TConn.init)
         and _params(gthread.ThreadWorker.wait_for_and_dispatch_events) == ["self", "timeout"]
         and _source(gthread.ThreadWorker.run).count("self.wait_for_and_dispatch_events(timeout=") == 2,
         "gunicorn gthread finishes a handled request with finish_request(conn, fs) on the poller (fs.result()), "
         "both loops of run() turn through wait_for_and_dispatch_events(timeout), and TConn.init reads a blocking "
         "preface only when negotiation.prior_knowledge_allowed(cfg, peer_addr)"),
        (callable(getattr(gunicorn_unreader.Unreader, "take_buffered", None))
         and "self.buf.write(data)\n        self.buf.write(rest)" in _source(gunicorn_unreader.Unreader.unread),
         "gunicorn Unreader.take_buffered() and unread(data) putting data before what it holds"),
        # --- event_contexts.py: the request context of each Socket.IO event ---
        ("with app.request_context(environ):" in _source(flask_socketio.SocketIO._handle_event)
         and "self.url_adapter = app.create_url_adapter(self.request)" in _source(flask_ctx.RequestContext.__init__)
         and "if self.url_adapter is not None:\n            self.match_request()" in _source(
             flask_ctx.RequestContext.push)
         and "if path is not None and path.startswith(self.engineio_path):" in _source(eio_middleware.WSGIApp.__call__)
         and _params(flask_app.Flask.create_url_adapter) == ["self", "request"],
         "Flask-SocketIO runs each event in app.request_context(environ); Flask's RequestContext matches the URL only "
         "with the adapter create_url_adapter(request) gave; engineio's middleware takes every path under its own"),
        # --- decoded_packets.py: the packet python-socketio decodes from each message ---
        ("pkt = self.packet_class(encoded_packet=data)" in _source(sio_server.Server._handle_eio_message)
         and _params(sio_packet.Packet.__init__) == ["self", "packet_type", "data", "namespace", "id", "binary",
                                                     "encoded_packet"]
         and not hasattr(sio_packet.Packet, "__slots__"),
         "socketio Server._handle_eio_message decodes with self.packet_class(encoded_packet=data); Packet(packet_type, "
         "data, namespace, id, binary, encoded_packet) keeps its fields in __dict__"),
        # --- the inbound gate (transport/inbound.py) and the connect timeout (utils/connect_timeout.py) ---
        ("self.logger.warning('%s is not connected to namespace %s',"
         in _source(sio_server.Server._handle_event),
         "socketio Server._handle_event logs '%s is not connected to namespace %s' (brought to DEBUG)"),
        ("if namespace in self.handlers or namespace in self.namespace_handlers \\\n"
         "                or self.namespaces == '*' or namespace in self.namespaces:" in sio_connect,
         "socketio Server._handle_connect serves a namespace in handlers/namespace_handlers/namespaces"),
        ("for pkt in p.packets:" in _source(eio_socket.Socket.handle_post_request)
         and "self.receive(pkt)" in _source(eio_socket.Socket.handle_post_request)
         and "self.receive(pkt)" in _source(eio_socket.Socket._websocket_handler),
         "engineio hands every polling and threaded-websocket packet to Socket.receive (the inbound gate)"),
        ("return self.rooms[namespace][None]._invm[eio_sid]" in _source(base_manager.BaseManager.sid_from_eio_sid)
         and "sid = self.manager.pre_connect(eio_sid, namespace)" in sio_connect,
         "socketio BaseManager.sid_from_eio_sid knows a session from its pre_connect on (connect timeout)"),
        # --- the log lines and exceptions the log filters recognise ---
        (all(f"raise KeyError('{text}')" in _source(eio_base_server.BaseServer._get_socket)
             for text in library_texts.GONE_SESSION_MESSAGES),
         "engineio raises KeyError(...) with the GONE_SESSION_MESSAGES for gone sessions"),
        (f"self.logger.warning('{library_texts.CANNOT_SEND_TO_SID}', sid)" in _source(eio_server.Server.send_packet),
         "engineio Server.send_packet logs CANNOT_SEND_TO_SID for a gone client"),
        (_log_once_suffix(eio_base_server.BaseServer._log_error_once) == library_texts.LOG_ONCE_SUFFIX,
         "engineio _log_error_once appends LOG_ONCE_SUFFIX"),
        ("raise ValueError" in _source(packet.Packet.decode)
         and packet.__file__.endswith(library_texts.ENGINEIO_PACKET_MODULE),
         "engineio Packet.decode (in ENGINEIO_PACKET_MODULE) raises ValueError on an undecodable packet"),
        ("def writer():" in _source(eio_socket.Socket._websocket_handler)
         and "self.server.start_background_task(writer)" in _source(eio_socket.Socket._websocket_handler)
         and library_texts.ENGINEIO_WRITER_THREAD_SUFFIX == "(writer)",
         "engineio's threaded websocket writer thread runs `writer` (name suffix ENGINEIO_WRITER_THREAD_SUFFIX)"),
        # --- wsproto, which the shared transport's websocket connection drives ---
        (_params(ws_connection.Connection.__init__)[:2] == ["self", "connection_type"],
         "wsproto Connection(connection_type, ...)"),
    ]
    return [what for ok, what in checks if not ok]


def check_libraries() -> None:
    """Raise LibraryVersionError with one line when a pinned library or an internal differs; call at start-up."""
    problems = version_mismatches()
    if not problems:
        problems = [f"a library internal changed: {what}" for what in internal_mismatches()]
    if problems:
        raise LibraryVersionError("; ".join(problems) + ": " + UPGRADE_ADVICE)


def main() -> int:
    """`python -m integration`: start.sh's check, one line on stderr and exit status 1 when a pin differs."""
    try:
        check_libraries()
    except LibraryVersionError as exc:
        print(f"signalboard: {exc}", file=sys.stderr)
        return 1
    return 0

