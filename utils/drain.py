"""Graceful shutdown: on SIGTERM the worker stops taking new traffic, tells every client when to reconnect, ends
their sessions in batches and stops background work, all before gunicorn's graceful timeout runs out.

Why a hook of our own: gunicorn's gthread worker answers SIGTERM by leaving its loop and waiting for open connections,
but every websocket holds its connection (and a thread) until the client goes, so the worker would sit out the whole
graceful timeout and be killed. `install_sigterm_drain` (called from gunicorn.conf.py's `post_worker_init`) puts a
handler in front of gunicorn's: it flags the drain at once and wakes a thread that runs `Drain.run`, which hands back
to gunicorn's own handler when the sessions are gone. For the notice the worker keeps answering HTTP, so load
balancers see /readyz turn 503 and new Socket.IO sessions get 503 with Retry-After (utils/admission.py); then it
stops listening (integration/gunicorn_listeners.py): a new connection is refused at TCP, as by any stopped server,
so a client that comes back while the drain goes on is never answered 5xx, and a new server can take the port. While
long-polling sessions are left it keeps listening (each poll comes on a new connection) until they have gone.

Timeline for a graceful timeout G (seconds):
  0                  /readyz 503, new sessions refused
  notice             the listeners close (once no long-polling session is left): new connections refused at TCP
  0                  every client gets `signalboard:reconnect` {"reason", "retry_after_ms"}, one after the other
  .. G/2 at most     batches of DRAIN_BATCH_SIZE clients get a Socket.IO disconnect (each namespace they joined);
                     batches at most 1 s apart, kept to a schedule (after a slow batch the next one starts at once);
                     `retry_after_ms` is 500-5000 ms (jittered) after the notice's end, so no client told to come
                     back returns while this server still answers 503
  + up to 2 s        clients close their own transport; the ones that do not are closed
  + up to 1.5 s      background tasks stop in STOP_ORDER and are waited for, then the Socket.IO service task
  >= notice          the drain lasts at least DRAIN_NOTICE_SECONDS, so load balancers notice the 503
  <= G - 3           handed back to gunicorn, which closes idle keep-alive connections (2 s at most) and exits 0

Background tasks (BackgroundTasks below) register their stop when they start, and stop in this order, from the
sources of new work to what carries it out (each one's work is done by the time the next one stops):
  1. demo publisher         (blueprints/demo/publisher.py, development) publishes the demo feeds
  2. token expiry           (blueprints/realtime/expiry.py) would warn or disconnect clients that are gone
  3. control listener       (hub/control.py, Redis mode) applies user-level actions other instances ask for
  4. long-poll cap          (utils/admission.py) ends long-polls, and there are none left
  5. connect timeout        (utils/connect_timeout.py) closes sessions that joined no namespace, all closed by now
  6. dashboard sampler      (blueprints/dashboard/live.py) emits snapshots to dashboards, gone too
  7. fan-out worker         (hub/fanout.py, memory mode) hands over what was queued before its stop, then returns
  8. webhook outbox         (blueprints/webhooks/outbox.py) queues the lifecycle events the drain raised (one try)
  9. webhook deliverer: URL (blueprints/webhooks/delivery.py, one per receiver) ends its batch or retry wait; with
                            Redis, what it had not delivered waits in the stream for another instance
 10. outbound deadlines     (utils/outbound.py) shuts POSTs still running at their deadline: none are left
 11. redis health monitor   (utils/redis_health.py, Redis mode) probes the listener and beats presence; this
                            instance's presence then expires from Redis after PRESENCE_TTL like a crashed one's
 12. message-queue listener (integration/redis_manager.py, Redis mode) python-socketio's pub/sub thread
 13. shared websocket loop  (transport/loop.py, WEBSOCKET_TRANSPORT=shared) every websocket and every ping timer,
                            last: until the sessions are closed it is what carries their goodbyes
Each logs `background task <name> started` and `... stopped` at INFO (or `did not stop` at WARNING).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from integration.gunicorn_listeners import stop_listening
from utils.metrics import DRAINED_SESSIONS
from utils.readiness import Readiness
from utils.runtime_stats import connected_clients
from utils.socketio_error_handler import swallow_disconnected_session

log = logging.getLogger(__name__)

# By kind: a task's name is its kind, or "<kind>: <which>" when there are several (one deliverer per receiver).
STOP_ORDER = ("demo publisher", "token expiry", "control listener", "long-poll cap", "connect timeout",
              "dashboard sampler", "fan-out worker", "webhook outbox", "webhook deliverer", "outbound deadlines",
              "redis health monitor", "message-queue listener", "shared websocket loop")
STOP_WAIT = 1.5  # how long the stopped tasks get, together, to return

RECONNECT_EVENT = "signalboard:reconnect"
# Jittered, so the clients of one instance do not all land elsewhere in the same second; counted from the notice's end.
RETRY_AFTER_MS = (500, 5000)
# gunicorn's gthread worker keeps idle keep-alive connections this long after it stops (STOP_KEEPALIVE_LINGER), and
# the drain must end early enough for that plus a margin to fit in the graceful timeout.
GUNICORN_STOP_LINGER = 2.0
MARGIN = 1.0
LEAVE_GRACE = 2.0  # how long asked clients get to close their own transport before theirs is closed
MAX_BATCH_INTERVAL = 1.0


@dataclass
class _Task:
    name: str
    stop: Callable[[], object]
    thread: Any = None  # what start_background_task returned (a threading.Thread in threading mode)


class BackgroundTasks:
    """Every long-running background task of one app: started here, so its stop is registered the moment it runs,
    and stopped by the drain in STOP_ORDER (see the module docstring)."""

    def __init__(self, spawn: Callable[..., Any]) -> None:
        self._spawn = spawn  # socketio.start_background_task: looked up at call time, so bound later is fine
        self._lock = threading.Lock()  # guards _tasks
        self._tasks: dict[str, _Task] = {}

    def start(self, name: str, target: Callable[[], object], stop: Callable[[], object]) -> Any:
        """Run `target` as the background task `name`; `stop` must make it return soon (any thread may call it)."""
        task = self._register(name, stop)

        def run() -> None:
            threading.current_thread().name = f"signalboard: {name}"
            target()

        task.thread = self._spawn(run)
        log.info("background task %s started", name)
        return task.thread

    def adopt(self, name: str, thread: Any, stop: Callable[[], object]) -> None:
        """Track a task a library started itself (python-socketio's message-queue listener)."""
        self._register(name, stop).thread = thread
        log.info("background task %s started", name)

    def _register(self, name: str, stop: Callable[[], object]) -> _Task:
        if _kind(name) not in STOP_ORDER:
            raise ValueError(f"background task {name!r} has no place in utils.drain.STOP_ORDER")
        task = _Task(name, stop)
        with self._lock:
            self._tasks[name] = task  # a restarted task (the listener) replaces its dead predecessor
        return task

    def running(self) -> list[str]:
        """Names of the tasks whose thread is alive, in stop order."""
        with self._lock:
            tasks = list(self._tasks.values())
        return [t.name for t in sorted(tasks, key=_stop_rank) if t.thread is not None and t.thread.is_alive()]

    def stop_all(self, wait: float = STOP_WAIT) -> list[str]:
        """Stop every started task in STOP_ORDER, then wait up to `wait` seconds for them; returns those still alive.

        One whose stop raises is logged and the others still stop.
        """
        with self._lock:
            tasks = sorted(self._tasks.values(), key=_stop_rank)
        for task in tasks:
            try:
                task.stop()
            except Exception:  # one broken stop must not keep the others (or the exit) from happening
                log.error("stopping background task %s failed", task.name, exc_info=True)
        deadline = time.monotonic() + wait
        alive = []
        for task in tasks:
            if task.thread is not None:
                task.thread.join(max(0.0, deadline - time.monotonic()))
            if task.thread is not None and task.thread.is_alive():
                log.warning("background task %s did not stop within %.1f s", task.name, wait)
                alive.append(task.name)
            else:
                log.info("background task %s stopped", task.name)
        return alive


def _kind(name: str) -> str:
    return name.split(": ", 1)[0]


def _stop_rank(task: _Task) -> int:
    return STOP_ORDER.index(_kind(task.name))


class Drain:
    """The graceful shutdown of one app: its Socket.IO server, readiness flag and stop callbacks."""

    def __init__(self, server: Any, readiness: Readiness, tasks: BackgroundTasks, *, graceful_timeout: float,
                 batch_size: int, notice: float, namespace: str = "/") -> None:
        self.server = server
        self.readiness = readiness
        self.tasks = tasks
        self.batch_size = batch_size
        self.namespace = namespace
        self.budget = max(0.0, graceful_timeout - GUNICORN_STOP_LINGER - MARGIN)
        self.notice = min(notice, self.budget)
        self._lock = threading.Lock()  # guards _stop_callbacks
        self._stop_callbacks: list[tuple[str, Callable[[], object]]] = []
        self._requested = threading.Event()
        self._stop_listening: Callable[[], object] = lambda: None  # outside gunicorn (tests): nothing listens
        self._listening_ends = 0.0  # monotonic time the notice ends, set when the drain starts
        self.finished = threading.Event()

    def add_stop_callback(self, name: str, callback: Callable[[], object]) -> None:
        """Run `callback` once during shutdown, after the clients are gone and before the background tasks stop
        (background tasks themselves register through BackgroundTasks.start).

        It should return quickly; one that raises is logged and the others still run.
        """
        with self._lock:
            self._stop_callbacks.append((name, callback))

    def arm(self, then: Callable[[], object], stop_listening: Callable[[], object]) -> None:
        """Start the thread that waits for `request()`, drains, and then calls `then` (gunicorn's own handler);
        `stop_listening` closes the worker's listeners when the notice ends.

        Started ahead of time because a signal handler must not start threads: it could interrupt the main thread
        while that holds the lock thread creation needs.
        """
        self._stop_listening = stop_listening

        def wait_then_drain() -> None:
            self._requested.wait()
            try:
                self.run()
            finally:
                then()

        self.server.start_background_task(wait_then_drain)

    def request(self) -> bool:
        """Begin draining; safe inside a signal handler. False when a drain was already requested."""
        if self._requested.is_set():
            return False
        self.readiness.start_draining()
        self._requested.set()
        return True

    def run(self) -> None:
        """The drain itself, in the calling thread; returns when it is time to hand back to gunicorn."""
        self.readiness.start_draining()
        started = time.monotonic()
        self._listening_ends = started + self.notice
        listening = threading.Thread(target=self._stop_listening_after_notice, args=(started,),
                                     name="signalboard: drain listener close")
        listening.start()
        sids = self._open_sessions()
        log.info("graceful shutdown: %d sessions to drain in batches of %d", len(sids), self.batch_size)
        batches = -(-len(sids) // self.batch_size)
        interval = min(MAX_BATCH_INTERVAL, self.budget / 2 / batches) if batches > 1 else 0.0
        # Asking a client to leave runs its disconnect handlers (about 3 ms each with Redis on a loaded 2-core
        # machine); what does not fit before the clients' leave grace and the background tasks' stop (or half the
        # budget, if that is longer) is left to end with the process, as in a crash, rather than have gunicorn
        # SIGKILL the worker at its graceful timeout in the middle.
        asking_ends = started + max(self.budget / 2, self.budget - LEAVE_GRACE - STOP_WAIT)
        # Every client hears when to come back before the first is disconnected: a hint is one cheap send, and a
        # client the budget leaves no time to ask still follows it when its connection ends with the process,
        # instead of all of them coming back at once on their own backoff.
        hinted: set[str] = set()
        for eio_sid in sids:
            if time.monotonic() >= asking_ends:
                break
            self._hint(eio_sid)
            hinted.add(eio_sid)
        asked: list[str] = []
        for index, eio_sid in enumerate(self._to_ask(sids)):
            if index % self.batch_size == 0:
                # Batch n is due n intervals after the start, at once if the batches before took longer.
                time.sleep(max(0.0, started + index // self.batch_size * interval - time.monotonic()))
            if time.monotonic() >= asking_ends:
                break
            if eio_sid not in hinted:  # opened since the snapshot
                self._hint(eio_sid)
            self._ask_to_leave(eio_sid)
            asked.append(eio_sid)
        deadline = min(started + self.budget, time.monotonic() + LEAVE_GRACE)
        while self._still_open(asked) and time.monotonic() < deadline:
            time.sleep(0.05)
        forced = self._still_open(asked)
        for eio_sid in forced:
            self._close(eio_sid)
        left = set(self._open_sessions()) - set(asked)
        DRAINED_SESSIONS.labels("asked").inc(len(asked) - len(forced))
        DRAINED_SESSIONS.labels("forced").inc(len(forced))
        DRAINED_SESSIONS.labels("left").inc(len(left))
        if left:
            log.warning("graceful shutdown: %d sessions were not asked to leave within the graceful timeout and end "
                        "with the process (raise GUNICORN_GRACEFUL_TIMEOUT for this many clients)", len(left))
        self._stop_background_work()
        listening.join()  # the drain lasts the notice at least
        log.info("graceful shutdown: %d sessions drained (%d closed by the server) in %.1f s",
                 len(asked), len(forced), time.monotonic() - started)
        self.finished.set()

    def _to_ask(self, sids: list[str]) -> Iterator[str]:
        """`sids`, then the sessions opened since: a handshake that passed admission just before the drain flag was
        set opens its session after the snapshot."""
        yield from sids
        known = set(sids)
        yield from [sid for sid in self._open_sessions() if sid not in known]

    def _stop_listening_after_notice(self, started: float) -> None:
        """Close the listeners when the notice ends, or later, once no long-polling session is left (within the
        budget): every poll of one comes on a new connection, and a refused one would cut it off from its hint."""
        time.sleep(max(0.0, self._listening_ends - time.monotonic()))
        while connected_clients(self.server.eio)["polling"] and time.monotonic() < started + self.budget:
            time.sleep(0.05)
        self._stop_listening()

    def close_all_now(self) -> None:
        """Quick shutdown (SIGINT/SIGQUIT): no notice, no batches; close every session so no thread holds the exit."""
        self.readiness.start_draining()
        for eio_sid in self._open_sessions():
            self._close(eio_sid)

    def _open_sessions(self) -> list[str]:
        return [sid for sid, socket in list(self.server.eio.sockets.items()) if not socket.closed]

    def _still_open(self, sids: list[str]) -> list[str]:
        sockets = self.server.eio.sockets
        return [sid for sid in sids if (socket := sockets.get(sid)) is not None and not socket.closed]

    def _joined(self, eio_sid: str) -> list[tuple[str, str]]:
        """(namespace, Socket.IO sid) of every namespace the client joined."""
        manager = self.server.manager
        return [(ns, sid) for ns in list(manager.get_namespaces())
                if (sid := manager.sid_from_eio_sid(eio_sid, ns)) is not None]

    @swallow_disconnected_session
    def _hint(self, eio_sid: str) -> None:
        """The reconnect hint on the main namespace (on each joined one for a client that skipped it, such as the
        dashboard page)."""
        namespaces = self._joined(eio_sid)
        until_refusing = max(0, round((self._listening_ends - time.monotonic()) * 1000))
        hint = {"reason": "server_shutdown", "retry_after_ms": until_refusing + random.randint(*RETRY_AFTER_MS)}
        for namespace, sid in [(ns, sid) for ns, sid in namespaces if ns == self.namespace] or namespaces:
            self.server.emit(RECONNECT_EVENT, hint, to=sid, namespace=namespace, ignore_queue=True)

    @swallow_disconnected_session
    def _ask_to_leave(self, eio_sid: str) -> None:
        """A Socket.IO disconnect from every namespace the client joined (after its hint); a well-behaved client
        then closes its transport itself."""
        for namespace, sid in self._joined(eio_sid):
            self.server.disconnect(sid, namespace=namespace, ignore_queue=True)

    def _close(self, eio_sid: str) -> None:
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is not None:
            # wait=False: a polling client that never polls again must not hold the drain.
            socket.close(wait=False, reason=self.server.eio.reason.SERVER_DISCONNECT)

    def _stop_background_work(self) -> None:
        with self._lock:
            callbacks = list(self._stop_callbacks)
        for name, callback in callbacks:
            try:
                callback()
            except Exception:  # one broken stop callback must not keep the others (or the exit) from happening
                log.error("stop callback %s failed during shutdown", name, exc_info=True)
        self.tasks.stop_all()
        self.server.shutdown()  # python-engineio's service task (ping timeouts); nothing is left to watch


def drain_of(worker: Any) -> Drain | None:
    """The Drain of the app a gunicorn worker serves, if that app is ours."""
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None)
    drain = extensions.get("drain") if isinstance(extensions, dict) else None
    return drain if isinstance(drain, Drain) else None


def install_sigterm_drain(worker: Any) -> None:
    """Put the drain in front of the gunicorn worker's SIGTERM handler (from `post_worker_init`)."""
    drain = drain_of(worker)
    if drain is None:
        log.warning("the app has no drain; SIGTERM stops the worker without telling clients")
        return
    gunicorn_handler = worker.handle_exit
    drain.arm(then=lambda: gunicorn_handler(signal.SIGTERM, None), stop_listening=lambda: stop_listening(worker))

    def on_sigterm(signum: int, frame: Any) -> None:
        if not drain.request():  # a second SIGTERM: stop waiting for the drain
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it for its own handler
