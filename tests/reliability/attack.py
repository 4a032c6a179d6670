"""The attack tests' two sides: an attacker on 127.0.0.1, and a legitimate client and an operator on other loopback
addresses (bound as the source address), who must be served while the attack runs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from config import SETTINGS
from tests.eio import EIO_PATH
from tests.hub.realtime_client import Api, unique
from tests.reliability.support import RawSocketIO, log_length, running_server, warning_lines
from tests.server import LivezWatcher, ServerProcess

ATTACKER = "127.0.0.1"
LEGITIMATE = "127.0.0.2"
OPERATOR = "127.0.0.3"  # /livez, /readyz, /metrics and the publishing API: never the attacker's address

# The edge limits at their production defaults (tests/server.py turns them off for every other test).
EDGE_SETTINGS = ("MAX_SESSIONS_PER_ADDRESS", "MAX_CONNECTIONS_PER_ADDRESS", "CONNECT_RATE_PER_ADDRESS",
                 "CONNECT_BURST_PER_ADDRESS", "CONNECT_TIMEOUT_SECONDS", "REQUEST_READ_TIMEOUT", "CLIENT_RATE_LIMIT",
                 "CLIENT_RATE_BURST", "CLIENT_FLOOD_REFUSALS")
EDGE_DEFAULTS = {s.name: s.default for s in SETTINGS if s.name in EDGE_SETTINGS}


class SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


_SESSIONS: list[requests.Session] = []


def session_from(source: str) -> requests.Session:
    """A requests Session whose connections come from `source`; close_sessions() closes them all."""
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    _SESSIONS.append(session)
    return session


def close_sessions() -> None:
    while _SESSIONS:
        _SESSIONS.pop().close()


@contextmanager
def attack_server(**env: Any) -> Iterator[ServerProcess]:
    with running_server(**{**EDGE_DEFAULTS, "ALLOW_ANONYMOUS": 1, **env}) as server:
        yield server


def operator_api(server: ServerProcess) -> Api:
    api = Api(server)
    api.session.mount("http://", SourceAddressAdapter(OPERATOR))
    _SESSIONS.append(api.session)
    return api


class Watch:
    """While an attack runs: /livez must answer within a second and /readyz stay 200 (asked from OPERATOR)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.livez = LivezWatcher(server, slow=1.0, session=session_from(OPERATOR))
        self.readyz_failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._readyz, daemon=True)
        self.log_start = log_length(server)

    def _readyz(self) -> None:
        session = session_from(OPERATOR)
        while not self._stop.wait(0.25):
            try:
                response = session.get(self.server.url + "/readyz", timeout=2)
                if response.status_code != 200:
                    self.readyz_failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.readyz_failures.append(type(exc).__name__)

    def __enter__(self) -> Watch:
        self.livez.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.livez.__exit__(*exc)

    def check(self) -> None:
        assert self.livez.failures == [], f"/livez failed or took over 1 s: {self.livez.failures[:5]}"
        assert self.readyz_failures == [], f"/readyz was not 200: {self.readyz_failures[:3]}"

    def new_lines(self) -> list[str]:
        return self.server.log().splitlines()[self.log_start:]

    def new_warnings(self) -> list[str]:
        return warning_lines(self.server, self.log_start)


def legitimate_websocket(server: ServerProcess, api: Api) -> float:
    """From LEGITIMATE over a websocket: connect, subscribe, receive one publish; the seconds to be subscribed."""
    channel = unique("legit")
    started = time.monotonic()
    ws = RawSocketIO(server.port, source=LEGITIMATE)
    try:
        ack = ws.call(1, "subscribe", {"channel": f"public:{channel}"})
        assert ack["ok"] is True, ack
        elapsed = time.monotonic() - started
        api.publish(f"public:{channel}", "tick", {"n": 1})
        while True:
            message = ws.next_message()
            assert message is not None, "closed before the publish arrived"
            if message.startswith('42["tick"'):
                return elapsed
    finally:
        ws.close()


class _Polling:
    def __init__(self, server: ServerProcess) -> None:
        self.session = session_from(LEGITIMATE)
        base = server.url + EIO_PATH.format(transport="polling")
        response = self.session.get(base, timeout=5)
        assert response.status_code == 200, (response.status_code, response.text)
        self.url = base + "&sid=" + json.loads(response.text[1:])["sid"]
        self.pending: list[str] = []

    def post(self, packet: str) -> None:
        response = self.session.post(self.url, data=packet.encode(), timeout=5)
        assert response.status_code == 200, (response.status_code, response.text)

    def until(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.pending:
                packet = self.pending.pop(0)
                if packet == "2":
                    self.post("3")
                elif packet.startswith(prefix):
                    return packet
            response = self.session.get(self.url, timeout=timeout)
            assert response.status_code == 200, (response.status_code, response.text)
            self.pending = response.text.split("\x1e")
        raise AssertionError(f"no {prefix!r} packet within {timeout}s")


def legitimate_polling(server: ServerProcess, api: Api) -> float:
    """From LEGITIMATE over long-polling: the same as legitimate_websocket."""
    channel = f"public:{unique('legit')}"
    started = time.monotonic()
    client = _Polling(server)
    client.post("40")
    client.until("40")
    client.post("421" + json.dumps(["subscribe", {"channel": channel}]))
    ack = json.loads(client.until("431")[3:])[0]
    assert ack["ok"] is True, ack
    elapsed = time.monotonic() - started
    api.publish(channel, "tick", {"n": 1})
    client.until('42["tick"')
    client.post("1")
    return elapsed


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent), read from OPERATOR."""
    text = session_from(OPERATOR).get(server.url + "/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if wanted
                         else rf"^{re.escape(name)} (\S+)$", re.M)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0
