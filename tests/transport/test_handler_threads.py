"""transport/handler_threads.py: each call starts at once in a thread of its own, idle threads are reused instead of
a new thread per call, and the shared transport hands its client packets to them."""

from __future__ import annotations

import contextvars
import threading
import time

import engineio
from engineio import packet as eio_packet
from engineio.socket import Socket

from integration.shared_sockets import EngineIOWebSocket, SharedTransport
from transport.handler_threads import BUSY_NAME, IDLE_NAME, HandlerThreads
from utils.runtime_stats import thread_counts


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_call_never_waits_for_another_one():
    threads = HandlerThreads()
    release, second_ran = threading.Event(), threading.Event()
    threads.run(release.wait, 10)
    threads.run(second_ran.set)  # the first call still blocks: this one must get a thread of its own
    assert second_ran.wait(5)
    release.set()
    threads.close()


def test_an_idle_thread_is_reused_instead_of_a_new_one():
    threads = HandlerThreads()
    ran: list[threading.Thread] = []
    for _ in range(5):
        done = threading.Event()
        threads.run(lambda done=done: (ran.append(threading.current_thread()), done.set()))
        assert done.wait(5)
        wait_for(lambda: threads.idle_count() == 1)  # parked, ready for the next call
    assert len({id(thread) for thread in ran}) == 1 and ran[0] is not threading.current_thread()
    assert ran[0].daemon
    threads.close()
    ran[0].join(5)
    assert not ran[0].is_alive()


def test_each_call_starts_with_an_empty_context_as_in_a_new_thread():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    threads = HandlerThreads()
    seen: list[str] = []
    for _ in range(2):
        done = threading.Event()

        def call(done=done):
            seen.append(var.get())
            var.set("set by a call")
            done.set()

        threads.run(call)
        assert done.wait(5)
        wait_for(lambda: threads.idle_count() == 1)
    assert seen == ["unset", "unset"]
    threads.close()


def test_an_exception_goes_to_the_thread_excepthook_and_the_thread_serves_on():
    threads = HandlerThreads()
    hooked: list[tuple[type, threading.Thread | None]] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: hooked.append((args.exc_type, args.thread))
    try:
        threads.run(lambda: 1 / 0)
        wait_for(lambda: threads.idle_count() == 1)
        done = threading.Event()
        threads.run(done.set)
        assert done.wait(5)
    finally:
        threading.excepthook = previous
    assert len(hooked) == 1 and hooked[0][0] is ZeroDivisionError and hooked[0][1] is not None
    threads.close()


def test_idle_threads_are_bounded_and_end_after_their_idle_time():
    threads = HandlerThreads(max_idle=2, idle_seconds=0.2)
    release = threading.Event()
    started: list[threading.Thread] = []
    lock = threading.Lock()

    def call():
        with lock:
            started.append(threading.current_thread())
        release.wait(10)

    for _ in range(4):
        threads.run(call)
    wait_for(lambda: len(started) == 4)
    release.set()
    wait_for(lambda: sum(t.is_alive() for t in started) == 2)  # two of the four end at once: max_idle
    assert threads.idle_count() == 2
    for thread in started:  # the idle ones end after idle_seconds
        thread.join(5)
        assert not thread.is_alive()
    assert threads.idle_count() == 0
    done = threading.Event()
    threads.run(done.set)  # and a call after that starts a new one
    assert done.wait(5)
    threads.close()


def test_every_call_runs_once_when_idle_timeouts_race_with_new_calls():
    threads = HandlerThreads(max_idle=4, idle_seconds=0.001)
    counted: list[int] = []
    lock = threading.Lock()

    def call(n):
        with lock:
            counted.append(n)

    for n in range(2000):
        threads.run(call, n)
        if n % 50 == 0:
            time.sleep(0.002)  # let idle threads time out while calls keep coming
    wait_for(lambda: len(counted) == 2000)
    time.sleep(0.05)
    assert sorted(counted) == list(range(2000))
    threads.close()


def test_idle_threads_count_with_the_pools_and_busy_ones_as_other_threads():
    threads = HandlerThreads()
    release, running = threading.Event(), threading.Event()
    before = thread_counts()
    threads.run(lambda: (running.set(), release.wait(10)))
    assert running.wait(5)
    busy = thread_counts()
    assert busy["other"] == before["other"] + 1 and busy["pool"] == before["pool"]
    release.set()
    wait_for(lambda: threads.idle_count() == 1)
    idle = thread_counts()
    assert idle["pool"] == before["pool"] + 1 and idle["other"] == before["other"]
    assert {t.name for t in threading.enumerate()} & {BUSY_NAME, IDLE_NAME} == {IDLE_NAME}
    threads.close()


def test_a_shared_loop_websocket_handles_its_connect_and_events_in_one_reused_thread():
    """Before: python-engineio's start_background_task, a new thread for the namespace connect and each event."""
    server = engineio.Server(async_mode="threading", async_handlers=False)  # as python-socketio builds it
    tasks: list[threading.Thread] = []

    def start_task(name, target, stop):
        thread = threading.Thread(target=target, daemon=True)
        tasks.append(thread)
        thread.start()
        return thread

    transport = SharedTransport(server, 1 << 20, start_task)
    eio_socket = Socket(server, "sid-1")
    server.sockets["sid-1"] = eio_socket
    transport.adopt(eio_socket)
    eio_socket.connected = True
    session = EngineIOWebSocket(eio_socket, transport, upgrading=False)
    handled: list[tuple[str, threading.Thread]] = []
    server.on("message", lambda sid, data: handled.append((data, threading.current_thread())))
    try:
        packets = ["0", *(f'2["event",{n}]' for n in range(4))]
        for n, data in enumerate(packets):
            transport.loop.call_soon(lambda data=data: session._receive(eio_packet.Packet(eio_packet.MESSAGE,
                                                                                         data=data)))
            wait_for(lambda n=n: len(handled) == n + 1 and not session.connecting
                     and transport.handlers.idle_count() == 1)
        assert [data for data, _ in handled] == packets
        threads_used = {id(thread) for _, thread in handled}
        assert len(threads_used) == 1 and handled[0][1].ident != transport.loop.thread_ident
    finally:
        transport.handlers.close()
        transport.loop.stop()
        for thread in tasks:
            thread.join(5)
