"""Signalboard's websocket transport: `WEBSOCKET_TRANSPORT=shared` serves every websocket from one thread.

`threaded` is python-engineio's own path (each websocket holds a gunicorn gthread thread plus three more threads
for its life). `shared` hands each websocket, right after its handshake, to one selector loop (transport/loop.py),
drives every ping from one timer, and encodes each broadcast once; see docs/perf.md for what that buys. This
package holds the parts that need no library internals (the loop, the websocket connection, frames, the
slow-consumer rule); the Engine.IO side, which adopts python-engineio's sockets, is integration/shared_sockets.py,
and integration/websocket_transport.py picks the transport. Under both, what waits to be sent to one client is
bounded and a client that stops reading is dropped as a slow consumer (transport/send_bound.py).
"""
