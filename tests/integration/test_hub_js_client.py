"""Interoperability with the official JavaScript client (socket.io-client from npm) against the real server."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import JS_DIR
from tests.hub.realtime_client import unique
from tests.server import ServerProcess

pytestmark = pytest.mark.integration

def test_official_client_connects_receives_and_recovers(node):
    channel = unique("js")
    with ServerProcess() as server:
        result = subprocess.run(
            [node, str(JS_DIR / "interop.mjs"), server.url, "test-api-key-1-0123456789", channel],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert server.bad_log_lines() == []

    assert report["refusal"]["data"]["reason"] == "token_invalid"
    assert report["refusal"]["data"]["code"] == "unauthorized"

    assert report["firstAck"]["ok"] is True and report["firstAck"]["offset"] == 0
    first = report["firstLog"]
    assert [e["event"] for e in first] == ["subscribe", "tick", "tick", "tick"]
    assert [e["data"] for e in first[1:]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [e["meta"]["offset"] for e in first[1:]] == [1, 2, 3]
    assert all(set(e["meta"]) == {"channel", "offset", "id", "ts"} and e["meta"]["channel"] == channel
               for e in first[1:])

    ack = report["secondAck"]
    assert ack["ok"] is True and ack["recovered"] is True and ack["offset"] == 6
    second = report["secondLog"]
    # The three missed messages, in order, then the ack, then the live one: each exactly once.
    assert [(e["kind"], e.get("meta", {}).get("offset")) for e in second] == [
        ("event", 4), ("event", 5), ("event", 6), ("ack", None), ("event", 7)]
    assert [e["data"] for e in second if e["kind"] == "event"] == [{"n": 3}, {"n": 4}, {"n": 5}, {"n": 6}]

    assert report["excluded"]["status"] == 200
    assert report["afterExclusion"] == [{"n": "sentinel"}]  # the JavaScript client's socket.id is the sid to exclude
