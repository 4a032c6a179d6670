"""integration/shared_sockets.inline_event_handlers: an event from a shared-loop websocket, already in a thread of
its own, runs its handler there; anything else still gets python-socketio's new thread."""

from __future__ import annotations

import threading

import socketio

from integration import shared_sockets
from integration.shared_sockets import inline_event_handlers


def server_with_handler():
    server = socketio.Server(async_mode="threading")
    ran: list[tuple[str, int]] = []
    done = threading.Event()

    @server.on("subscribe")
    def subscribe(sid, data):
        ran.append((data, threading.get_ident()))
        done.set()

    server.manager.is_connected = lambda sid, namespace: True  # no Engine.IO session needed for _handle_event
    inline_event_handlers(server)
    return server, ran, done


def handle(server, data):
    server._handle_event("eio-1", "/", None, ["subscribe", data])


def test_an_event_in_its_receive_thread_runs_there_once():
    server, ran, done = server_with_handler()

    def receive_thread():
        shared_sockets._RECEIVING.event_thread = True
        try:
            handle(server, "first")  # inline: this thread
            assert ran == [("first", threading.get_ident())]
            done.clear()
            handle(server, "second")  # the flag is used up: a thread of its own, as python-socketio does
            assert done.wait(5)
            assert ran[1][0] == "second" and ran[1][1] != threading.get_ident()
        finally:
            shared_sockets._RECEIVING.event_thread = False

    thread = threading.Thread(target=receive_thread)
    thread.start()
    thread.join(10)
    assert len(ran) == 2


def test_other_threads_and_other_tasks_keep_python_socketios_thread():
    server, ran, done = server_with_handler()
    handle(server, "plain")  # no receive thread here (the threaded transport, polling)
    assert done.wait(5) and ran[0][1] != threading.get_ident()
    started = server.start_background_task(lambda: None)
    started.join(5)
    assert isinstance(started, threading.Thread)
