"""`flask demo`: a terminal subscriber that shows the path a message takes, HTTP in and Socket.IO out."""

from __future__ import annotations

import json
import threading
from typing import Any

import click
import requests
import socketio
from flask import current_app
from flask.cli import with_appcontext

from blueprints.demo.banner import HELLO_CHANNEL, server_url
from blueprints.demo.publisher import JOBS_CHANNEL, TICKER_CHANNEL


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _api(url: str, api_key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = requests.post(url + path, json=body, timeout=10, headers={"Authorization": f"Bearer {api_key}"})
    except requests.RequestException as exc:
        raise _fail(f"{url} does not answer ({type(exc).__name__}): is the server running (make run)?") from None
    if response.status_code != 200:
        try:
            error = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            error = response.text[:200]
        raise _fail(f"POST {path} answered {response.status_code}: {error}")
    return response.json()


@click.command("demo")
@click.option("--url", help="The server (default: this configuration's HOST and PORT).")
@click.option("--channel", "channels", multiple=True, help="Channel to subscribe to; repeatable (default: demo.*).")
@click.option("--count", type=int, default=0, help="Stop after this many messages (default: run until Ctrl-C).")
@with_appcontext
def demo_command(url: str | None, channels: tuple[str, ...], count: int) -> None:
    """Subscribe to the demo channels and print every message; publishes one over HTTP to show the way through."""
    config = current_app.config
    if not config["API_KEYS"]:
        raise _fail("no API key: set API_KEYS (or run in development, SIGNALBOARD_ENV=development)")
    url = (url or server_url(config)).rstrip("/")
    api_key = config["API_KEYS"][0]
    channels = channels or (TICKER_CHANNEL, JOBS_CHANNEL, HELLO_CHANNEL)
    token = _api(url, api_key, "/api/v1/tokens", {"sub": "terminal-demo", "channels": list(channels), "ttl": 3600})
    received = threading.Event()
    seen = 0
    client = socketio.Client(reconnection=False)  # a new connection would need its subscriptions again: say so instead

    @client.on("*")
    def show(event: str, data: Any = None, meta: Any = None) -> None:
        nonlocal seen
        where = f"{meta.get('channel')} #{meta.get('offset')}" if isinstance(meta, dict) else ""
        click.echo(f"  ← Socket.IO  {where:<18} {event:<10} {json.dumps(data)}")
        seen += 1
        if count and seen >= count:
            received.set()

    try:
        client.connect(url, auth={"token": token["token"]}, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError as exc:
        raise _fail(f"Socket.IO connection to {url} failed: {exc}") from None
    try:
        for channel in channels:
            ack = client.call("subscribe", {"channel": channel}, timeout=10)
            if not ack.get("ok"):
                raise _fail(f"subscribe {channel}: {ack.get('error', {}).get('message')}")
        click.echo(f"Subscribed to {', '.join(channels)} at {url} as {token['sub']}; Ctrl-C stops.")
        if HELLO_CHANNEL in channels:
            hello = {"text": "hello from flask demo"}
            click.echo(f"  → HTTP       POST /api/v1/publish   {HELLO_CHANNEL} hello {json.dumps(hello)}")
            _api(url, api_key, "/api/v1/publish", {"channel": HELLO_CHANNEL, "event": "hello", "data": hello})
        while not received.wait(0.5):
            if not client.connected:
                raise _fail("the server closed the connection")
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
