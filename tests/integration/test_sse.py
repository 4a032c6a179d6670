"""SSE streams (GET /api/v1/stream) against the real server: curl, requests + sseclient-py, and a Socket.IO
subscriber on the same channel; delivery, order, exactly-once, Last-Event-ID recovery, resync, refusals."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.server import ServerProcess
from tests.sse_client import SseStream

pytestmark = pytest.mark.integration

HISTORY = 20


@pytest.fixture(scope="module")
def server():
    env = {"HISTORY_MAX_MESSAGES": HISTORY, "API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0, "ALLOW_ANONYMOUS": 1,
           "WEBSOCKET_SEND_BUFFER": 65536, "ACCESS_LOG": 1}
    with ServerProcess(**env) as running:
        yield running
        assert running.bad_log_lines() == []


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


def test_curl_receives_messages_as_sse_events(server, api):
    channel = unique("orders")
    token = api.token("alice", [channel])
    curl = subprocess.Popen(["curl", "-sN", "--max-time", "20", "-H", f"Authorization: Bearer {token}",
                             f"{server.url}/api/v1/stream?channel={channel}"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(curl.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not any("signalboard:subscribed" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        published = api.publish(channel, "created", {"n": 1})
        while not any(published["id"] in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        curl.terminate()
        curl.wait(10)
        reader.join(5)
        curl.stdout.close()
    text = "".join(lines)
    epoch = api.get(f"/channels/{channel}/history").json()["epoch"]
    assert (f"id: {epoch};{channel}=1\nevent: created\n"
            f'data: {{"channel":"{channel}","offset":1,"id":"{published["id"]}","ts":{published["ts"]},'
            f'"data":{{"n":1}}}}\n\n') in text


def test_sse_and_socketio_get_every_message_once_in_order(server, api):
    channel = unique("orders")
    token = api.token("alice", [channel])
    stream = SseStream(server.url, {"channel": channel}, bearer(token))
    client = HubClient(server.url).connect({"token": token})
    try:
        stream.wait_event("signalboard:subscribed")
        assert client.call("subscribe", {"channel": channel})["ok"]
        count = 200
        for n in range(count):
            api.publish(channel, "tick", {"n": n})
        assert stream.wait_offsets(channel, count) == list(range(1, count + 1))
        assert client.wait_offsets(channel, count) == list(range(1, count + 1))
        time.sleep(0.3)  # nothing more arrives: exactly once
        assert stream.offsets(channel) == list(range(1, count + 1))
        assert [e.data["data"]["n"] for e in stream.messages(channel)] == list(range(count))
    finally:
        stream.close()
        client.disconnect()


def test_two_channels_and_the_channels_parameter(server, api):
    first, second = unique("a"), unique("b")
    token = api.token("alice", [first, second])
    stream = SseStream(server.url, {"channels": f"{first},{second}"}, bearer(token))
    try:
        acks = stream.wait_event("signalboard:subscribed").data["channels"]
        assert [ack["channel"] for ack in acks] == [first, second]
        api.publish(first, "x", 1)
        api.publish(second, "y", 2)
        api.publish(first, "x", 3)
        stream.wait_offsets(first, 2)
        stream.wait_offsets(second, 1)
        epoch = acks[0]["epoch"]
        assert stream.last_id() in (f"{epoch};{first}=2;{second}=1",)
    finally:
        stream.close()


def test_last_event_id_replays_what_was_missed_then_live(server, api):
    channel = unique("orders")
    token = api.token("alice", [channel])
    stream = SseStream(server.url, {"channel": channel}, bearer(token))
    stream.wait_event("signalboard:subscribed")
    for n in range(3):
        api.publish(channel, "tick", n)
    stream.wait_offsets(channel, 3)
    last = stream.last_id()
    stream.close()  # dropped connection
    for n in range(3, 7):
        api.publish(channel, "tick", n)
    again = SseStream(server.url, {"channel": channel}, {**bearer(token), "Last-Event-ID": last})
    try:
        ack = again.wait_event("signalboard:subscribed").data["channels"][0]
        assert ack["recovered"] is True
        api.publish(channel, "tick", 7)
        assert again.wait_offsets(channel, 5) == [4, 5, 6, 7, 8]
        assert not again.of("signalboard:resync")
    finally:
        again.close()


def test_since_parameter_and_token_in_the_query(server, api):
    channel = unique("orders")
    token = api.token("alice", [channel])
    for n in range(5):
        api.publish(channel, "tick", n)
    stream = SseStream(server.url, {"channel": channel, "since": f"{channel}:3", "token": token})
    try:
        assert stream.wait_offsets(channel, 2) == [4, 5]
    finally:
        stream.close()
    refused = requests.get(server.url + "/api/v1/stream", params={"channel": "not.granted", "token": token})
    assert error_of(refused, 403)["code"] == "forbidden"
    # The access log has the request line, with the token masked; gunicorn writes it after the response is sent,
    # so the client can get here first.
    server.wait_until(lambda: "GET /api/v1/stream" in server.log(), timeout=5, what="the stream's access log line")
    assert token not in server.log()


def test_resync_when_history_no_longer_covers_the_position(server, api):
    channel = unique("orders")
    token = api.token("alice", [channel])
    for n in range(HISTORY + 5):
        api.publish(channel, "tick", n)
    stream = SseStream(server.url, {"channel": channel, "since": f"{channel}:1"}, bearer(token))
    try:
        resync = stream.wait_event("signalboard:resync").data
        assert resync["channel"] == channel and resync["offset"] == HISTORY + 5
        assert stream.wait_event("signalboard:subscribed").data["channels"][0]["recovered"] is False
        api.publish(channel, "tick", "live")
        assert stream.wait_offsets(channel, 1) == [HISTORY + 6]  # nothing replayed, live from there
    finally:
        stream.close()


def test_anonymous_streams_get_public_channels_only(server, api):
    channel = "public:" + unique("news")
    stream = SseStream(server.url, {"channel": channel})
    try:
        stream.wait_event("signalboard:subscribed")
        api.publish(channel, "news", "hello")
        stream.wait_offsets(channel, 1)
    finally:
        stream.close()
    error = error_of(requests.get(server.url + "/api/v1/stream", params={"channel": unique("private")}), 403)
    assert error["code"] == "forbidden"


@pytest.mark.parametrize("params, headers, status, code", [
    ({}, {}, 400, "invalid_payload"),
    ({"channel": "bad name"}, {}, 400, "invalid_channel"),
    ({"channel": "orders.eu", "token": "not-a-token"}, {}, 401, "unauthorized"),
    ({"channel": "orders.eu"}, {"Last-Event-ID": "garbage id with spaces"}, 400, "invalid_payload"),
    ({"channel": "orders.eu"}, {"Last-Event-ID": "abc;orders.eu=-1"}, 400, "invalid_payload"),
    ({"channel": "orders.eu"}, {"Last-Event-ID": "abc;orders.eu"}, 400, "invalid_payload"),
    ({"channel": "orders.eu"}, {"Last-Event-ID": "abc;bad name=1"}, 400, "invalid_channel"),
    ({"channel": "orders.eu", "since": "orders.eu:x"}, {}, 400, "invalid_payload"),
    ({"channel": "orders.eu", "epoch": "no spaces allowed"}, {}, 400, "invalid_payload"),
    ({"channel": "orders.eu", "presence": "yes"}, {}, 400, "invalid_payload"),
])
def test_bad_requests_answer_the_error_shape(server, api, params, headers, status, code):
    token = api.token("alice", ["orders.*"])
    merged = {"Authorization": f"Bearer {token}", **headers} if "token" not in params else headers
    assert error_of(requests.get(server.url + "/api/v1/stream", params=params, headers=merged), status)["code"] == code


def test_forbidden_channel_refuses_the_whole_stream(server, api):
    allowed, other = unique("orders"), unique("secret")
    token = api.token("alice", [allowed])
    response = requests.get(server.url + "/api/v1/stream", params={"channel": [allowed, other]},
                            headers=bearer(token))
    assert error_of(response, 403)["code"] == "forbidden"
    assert api.get(f"/channels/{allowed}/presence").json()["connections"] == 0


def test_presence_counts_sse_subscribers(server, api):
    channel = unique("room")
    stream = SseStream(server.url, {"channel": channel}, bearer(api.token("carol", [channel])))
    try:
        stream.wait_event("signalboard:subscribed")
        who = api.get(f"/channels/{channel}/presence").json()
        assert who["connections"] == 1 and who["subscribers"] == [{"sub": "carol", "connections": 1}]
    finally:
        stream.close()
    server.wait_until(lambda: api.get(f"/channels/{channel}/presence").json()["connections"] == 0,
                      what="presence gone after the stream closed")


def test_presence_events_reach_streams_that_ask_for_them(server, api):
    channel = unique("room")
    watching = SseStream(server.url, {"channel": channel, "presence": "1"}, bearer(api.token("carol", [channel])))
    quiet = SseStream(server.url, {"channel": channel}, bearer(api.token("dan", [channel])))
    client = HubClient(server.url).connect({"token": api.token("erin", [channel])})
    try:
        watching.wait_event("signalboard:subscribed")
        quiet.wait_event("signalboard:subscribed")
        assert client.call("subscribe", {"channel": channel})["ok"]
        client.disconnect()
        watching.wait_for(lambda: len(watching.of("signalboard:presence")) >= 3, what="dan's join, erin's join, leave")
        assert [e.data for e in watching.of("signalboard:presence")] == [
            {"channel": channel, "sub": "dan", "action": "join", "connections": 1},
            {"channel": channel, "sub": "erin", "action": "join", "connections": 1},
            {"channel": channel, "sub": "erin", "action": "leave", "connections": 0}]
        api.publish(channel, "after", {})  # the quiet stream has had time to get whatever was sent before it
        quiet.wait_offsets(channel, 1)
        assert quiet.of("signalboard:presence") == []
    finally:
        watching.close()
        quiet.close()


def test_expired_token_is_warned_then_ends_the_stream_with_a_reason(server, api):
    channel = unique("orders")
    stream = SseStream(server.url, {"channel": channel}, bearer(api.token("dave", [channel], ttl=2)))
    try:
        assert stream.ended.wait(10)
        names = [event.event for event in stream.of()]
        assert names[-2:] == ["signalboard:token_expiring", "signalboard:token_expired"], names
        expiring, expired = stream.of("signalboard:token_expiring")[0], stream.of("signalboard:token_expired")[0]
        assert expired.data["reason"] == "token_expired"
        # A 2 s token is warned half-way: about 1 s left (the whole seconds of the Socket.IO warning).
        assert expiring.data["exp"] == expired.data["exp"] and expiring.data["seconds_left"] in (0, 1, 2)
    finally:
        stream.close()


def test_livez_answers_while_streams_are_open(server, api):
    channel = "public:" + unique("many")
    streams = [SseStream(server.url, {"channel": channel}) for _ in range(80)]  # more than a few threads' worth
    try:
        for stream in streams:
            stream.wait_event("signalboard:subscribed")
        assert requests.get(server.url + "/livez", timeout=2).status_code == 200
        api.publish(channel, "all", 1)
        for stream in streams:
            stream.wait_offsets(channel, 1)
    finally:
        for stream in streams:
            stream.close()


def test_revoking_the_token_ends_the_stream_and_refuses_it_again(server, api):
    channel = unique("orders")
    token = api.token("erin", [channel])
    stream = SseStream(server.url, {"channel": channel}, bearer(token))
    other = SseStream(server.url, {"channel": channel}, bearer(api.token("frank", [channel])))
    try:
        stream.wait_event("signalboard:subscribed")
        other.wait_event("signalboard:subscribed")
        listed = api.get("/users/erin").json()["connections"]
        assert [row["transport"] for row in listed] == ["sse"] and listed[0]["channels"] == [channel]
        answer = api.post("/tokens/revoke", {"sub": "erin"}).json()
        assert answer["disconnected"] == 1
        assert stream.ended.wait(10)
        assert stream.of("signalboard:token_revoked")[-1].data["reason"] == "token_revoked"
        again = requests.get(server.url + "/api/v1/stream", params={"channel": channel}, headers=bearer(token))
        assert error_of(again, 401)["reason"] == "token_revoked"
        api.publish(channel, "still", 1)
        other.wait_offsets(channel, 1)  # the other user's stream is untouched
    finally:
        stream.close()
        other.close()


def test_disconnect_and_unsubscribe_of_a_user_reach_their_streams(server, api):
    first, second = unique("a"), unique("b")
    token = api.token("gina", [first, second])
    stream = SseStream(server.url, {"channel": [first, second]}, bearer(token))
    try:
        stream.wait_event("signalboard:subscribed")
        assert api.post("/users/gina/unsubscribe", {"channel": first}).json()["unsubscribed"] == 1
        assert stream.wait_event("signalboard:unsubscribed").data["channel"] == first
        api.publish(first, "gone", 1)
        api.publish(second, "kept", 2)
        stream.wait_offsets(second, 1)
        assert stream.offsets(first) == []
        assert api.post("/users/gina/disconnect", {"reason": "maintenance"}).json()["disconnected"] == 1
        assert stream.ended.wait(10)
        assert stream.of("signalboard:disconnect")[-1].data["reason"] == "maintenance"
    finally:
        stream.close()


def test_a_stalled_reader_is_dropped_as_a_slow_consumer_without_affecting_others(server, api):
    channel = "public:" + unique("firehose")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window from the start
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(f"GET /api/v1/stream?channel={channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    reader = SseStream(server.url, {"channel": channel})
    try:
        reader.wait_event("signalboard:subscribed")
        server.wait_until(lambda: api.get(f"/channels/{channel}/presence").json()["connections"] == 2,
                          what="both streams subscribed")
        blob = "x" * 8000
        for n in range(400):  # ~3.2 MB, far over the 64 KiB bound (and the kernel's buffers) for the one not reading
            api.publish(channel, "big", {"n": n, "blob": blob})
        assert reader.wait_offsets(channel, 400, timeout=30) == list(range(1, 401))
        server.wait_until(lambda: api.get(f"/channels/{channel}/presence").json()["connections"] == 1,
                          what="the stalled stream dropped")
        assert "SSE stream" in server.log() and "dropped as a slow consumer" in server.log()
    finally:
        stalled.close()
        reader.close()


def test_sigterm_tells_streams_to_retry_and_ends_them(server_factory):
    running = server_factory(ALLOW_ANONYMOUS=1)
    channel = "public:" + unique("drain")
    stream = SseStream(running.url, {"channel": channel})
    assert stream.response.status_code == 200, stream.response.text
    stream.wait_event("signalboard:subscribed")
    running.process.send_signal(signal.SIGTERM)
    try:
        assert stream.ended.wait(15)
        last = stream.of("signalboard:reconnect")
        assert last and last[-1].retry == 3000 and last[-1].data["reason"] == "server_shutdown"
        assert running.process.wait(20) == 0
    finally:
        stream.close()


def test_streams_are_counted_in_metrics_readyz_and_the_dashboard_table(server, api):
    channel = unique("counted")
    stream = SseStream(server.url, {"channel": channel}, bearer(api.token("hank", [channel])))
    try:
        stream.wait_event("signalboard:subscribed")
        assert server.readyz()["clients"]["sse"] >= 1
        metrics = requests.get(server.url + "/metrics", timeout=5).text
        line = next(line for line in metrics.splitlines()
                    if line.startswith('signalboard_connected_clients{transport="sse"}'))
        assert float(line.split()[-1]) >= 1
    finally:
        stream.close()
    server.wait_until(lambda: server.readyz()["clients"]["sse"] == 0, what="the stream uncounted once closed")


def test_streams_with_the_threaded_websocket_transport_use_a_loop_of_their_own(server_factory):
    running = server_factory(WEBSOCKET_TRANSPORT="threaded", ALLOW_ANONYMOUS=1)
    channel = "public:" + unique("threaded")
    stream = SseStream(running.url, {"channel": channel})
    try:
        stream.wait_event("signalboard:subscribed")
        Api(running).publish(channel, "tick", 1)
        assert stream.wait_offsets(channel, 1) == [1]
    finally:
        stream.close()
    assert running.bad_log_lines() == []


def test_opening_streams_counts_against_the_client_rate_limit_per_address(server_factory):
    running = server_factory(ALLOW_ANONYMOUS=1, CLIENT_RATE_LIMIT=1, CLIENT_RATE_BURST=2)
    channel = "public:" + unique("limited")
    opened = [SseStream(running.url, {"channel": channel}) for _ in range(2)]
    try:
        refused = requests.get(running.url + "/api/v1/stream", params={"channel": channel}, timeout=5)
        assert error_of(refused, 429)["code"] == "rate_limited" and "Retry-After" in refused.headers
        assert [stream.response.status_code for stream in opened] == [200, 200]
    finally:
        for stream in opened:
            stream.close()
