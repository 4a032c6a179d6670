"""A draining gunicorn worker stops listening before it exits, so new connections are refused at TCP, not 503'd.

gunicorn 27.0.1's gthread `ThreadWorker` keeps its listeners registered until its loop ends (`run` calls
`set_accept_enabled(False)` and closes `self.sockets` after it), and the drain (utils/drain.py) holds that loop
open while it says goodbye. `stop_listening` ends the listening early, on the worker's own loop thread
(`method_queue.defer`: the poller is not safe to change from another thread): it unregisters the listeners and
closes them, and leaves `self.sockets` empty so the loop's re-enabling check has nothing to register. The master
closed its copy of each listener before it passed SIGTERM on (`Arbiter.stop`), so the port is then free: a
client retrying meanwhile gets ECONNREFUSED and backs off, a load balancer moves to the next upstream, and a new
server may bind the port while this one finishes its sessions. Connections already accepted (websockets being
drained, kept-alive HTTP) are untouched.
"""

from __future__ import annotations

from typing import Any


def _close_listeners(worker: Any) -> None:
    worker.set_accept_enabled(False)
    listeners, worker.sockets = worker.sockets, []
    for listener in listeners:
        listener.close()


def stop_listening(worker: Any) -> None:
    """Close the worker's listening sockets soon, on its loop thread; safe from any thread, and to call twice."""
    worker.method_queue.defer(_close_listeners, worker)
