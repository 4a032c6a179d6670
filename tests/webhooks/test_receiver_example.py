"""The documented receiver (docs/webhook_receiver.py) run as its own Flask process: it takes Signalboard's signed
batches, and refuses a forged signature and a replayed old request."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.server import ROOT, free_port
from tests.webhooks.support import SECRET

pytestmark = pytest.mark.integration


@pytest.fixture
def example_receiver():
    port = free_port()
    output = tempfile.NamedTemporaryFile(prefix="example-receiver-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", str(ROOT / "docs" / "webhook_receiver.py"), "run", "--port",
         str(port)], cwd=ROOT, env={**os.environ, "WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"},
        stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/signalboard"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline and process.poll() is None, Path(output.name).read_text()
            time.sleep(0.1)
    yield url, Path(output.name)
    os.kill(process.pid, signal.SIGTERM)
    process.wait(10)
    output.close()
    os.unlink(output.name)


def _post(url: str, body: bytes, timestamp: int, secret: str = SECRET) -> int:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Signalboard-Timestamp": str(timestamp),
               "X-Signalboard-Signature": f"sha256={mac}"}
    return requests.post(url, data=body, headers=headers, timeout=5).status_code


def test_the_documented_receiver_takes_signed_batches_and_refuses_forged_or_old_ones(server_factory,
                                                                                      example_receiver):
    url, output = example_receiver
    server = server_factory(WEBHOOK_URLS=url, WEBHOOK_SECRET=SECRET, WEBHOOK_BATCH_MS=100)
    room = unique("room")
    client = HubClient(server.url).connect({"token": Api(server).token("max", [room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    client.disconnect()
    deadline = time.monotonic() + 15
    while "connection.closed" not in output.read_text():
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.1)
    printed = output.read_text()
    assert "channel.occupied" in printed and room in printed

    body = b'{"events": [{"id": "forged", "type": "channel.vacated", "channel": "x"}]}'
    assert _post(url, body, int(time.time()), secret="not-the-secret-at-all") == 401
    assert _post(url, body, int(time.time()) - 3600) == 401  # correctly signed, but an hour old: a replay
    assert _post(url, body, int(time.time())) == 204
