"""Anchor: a stock Flask-SocketIO app in threading mode, as the docs and tutorials set it up.

The benchmark runs it under gunicorn gthread to show what Signalboard is compared against. It has
only what the harness needs: a broadcast endpoint, a trivial /livez, and a `subscribe` event acked
like Signalboard's so the clients do the same round trips on every server.
"""

from flask import Flask, request
from flask_socketio import SocketIO, join_room

app = Flask(__name__)
app.config["SECRET_KEY"] = "bench-anchor-not-secret"
socketio = SocketIO(app, async_mode="threading")


@app.post("/broadcast")
def broadcast() -> dict:
    body = request.get_json(force=True)
    socketio.emit(body.get("event", "tick"), body.get("data"))
    return {"ok": True}


@app.get("/livez")
def livez() -> dict:
    return {"status": "ok"}


@socketio.on("subscribe")
def on_subscribe(data: dict) -> dict:
    join_room(data["channel"])
    return {"ok": True, "channel": data["channel"]}
