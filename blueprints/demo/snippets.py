"""Copy-paste clients for one channel, filled with this server's URL and a token: JavaScript (socket.io-client),
Python (python-socketio) and a curl publish. The dashboard's "Connect a client" panel shows them; the start-up block
uses the curl one."""

from __future__ import annotations

import json
import shlex
from typing import Any

# The curl snippet reads the key from here: the dashboard never shows an API key.
API_KEY_VARIABLE = "$SIGNALBOARD_API_KEY"


def curl_publish(url: str, api_key: str, channel: str, event: str, data: Any) -> str:
    """A ready curl publish; an `api_key` such as "$SIGNALBOARD_API_KEY" is left for the shell to expand."""
    body = json.dumps({"channel": channel, "event": event, "data": data})
    header = f"Authorization: Bearer {api_key}"
    header = f'"{header}"' if api_key.startswith("$") else shlex.quote(header)
    return f"curl -s -H {header} -H 'Content-Type: application/json' -d {shlex.quote(body)} {url}/api/v1/publish"


def javascript_snippet(url: str, channel: str, token: str) -> str:
    return f"""import {{ io }} from "socket.io-client";

const socket = io({json.dumps(url)}, {{ auth: {{ token: {json.dumps(token)} }} }});
socket.on("connect", () => {{
  socket.emit("subscribe", {{ channel: {json.dumps(channel)} }}, (ack) => {{
    console.log("subscribed", JSON.stringify(ack));
  }});
}});
socket.on("connect_error", (err) => console.error("connect_error", err.message));
socket.onAny((event, data, meta) => console.log(event, JSON.stringify(data), JSON.stringify(meta)));
"""


def python_snippet(url: str, channel: str, token: str) -> str:
    # json.dumps: the values are ASCII (a URL, a JWT, a channel name), and a JSON string is then a Python literal.
    return f"""import socketio

sio = socketio.Client()


@sio.on("*")
def show(event, data=None, meta=None):
    print(event, data, meta)


sio.connect({json.dumps(url)}, auth={{"token": {json.dumps(token)}}})
print("subscribed", sio.call("subscribe", {{"channel": {json.dumps(channel)}}}))
sio.wait()
"""


def client_snippets(url: str, channel: str, token: str) -> dict[str, str]:
    """The three snippets by language; `channel` must already be a valid channel name."""
    return {
        "javascript": javascript_snippet(url, channel, token),
        "python": python_snippet(url, channel, token),
        "curl": curl_publish(url, API_KEY_VARIABLE, channel, "hello", {"text": "hello from curl"}),
    }
