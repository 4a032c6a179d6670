"""Property tests (Hypothesis) against the live server: random polling payloads, random websocket text frames and
random JSON bodies for the HTTP API. Never a 500, a hang, an ERROR line or a traceback; HTTP errors keep their JSON
shape. SIGNALBOARD_FUZZ_EXAMPLES scales the runs (bench/fuzz.py runs them long)."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.eio import PollingSession
from tests.reliability.support import Api, Bystanders, RawSocketIO, frame, probe_alive, reliability_server

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SIGNALBOARD_FUZZ_EXAMPLES", "30"))
# Derandomized in the suite so a run is repeatable; bench/fuzz.py sets SIGNALBOARD_FUZZ_RANDOM=1 to explore.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("SIGNALBOARD_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KEY = "test-api-key-1-0123456789"
TRIED: dict[str, int] = {}  # inputs tried per test, for docs/reliability.md


server = reliability_server(clean_log=False)


@pytest.fixture(scope="module")
def token(server):
    return Api(server).token("fuzzer", ["**"], publish=["**"])


@pytest.fixture(scope="module")
def bystanders(server):
    watching = Bystanders(server, Api(server))
    yield watching
    watching.close()


def count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["subscribe", "unsubscribe", "publish", "refresh_token", "connect", "disconnect", "x", ""])
packet_headers = st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "9", "", "21", "2/x,", "51-", "59999999999-",
                                  "3", "42", "2/,", "x", "4-"])
# Socket.IO-shaped text: a plausible header and JSON, or raw noise.
socketio_text = st.one_of(
    st.builds(lambda h, n, v: h + json.dumps([n, v]), packet_headers, names, json_values),
    st.builds(lambda h, v: h + json.dumps(v), packet_headers, json_values),
    st.builds(lambda h, v: h + json.dumps(v)[: max(0, len(json.dumps(v)) - 1)], packet_headers, json_values),
    st.text(max_size=60),
)


@FUZZ
@given(body=st.one_of(
    st.builds(lambda t: ("4" + t).encode(), socketio_text),
    st.lists(st.builds(lambda t: ("4" + t).encode(), socketio_text), min_size=1, max_size=20).map(b"\x1e".join),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
))
def test_polling_payloads(server, token, bystanders, body):
    count("polling payloads")
    session = PollingSession(server.url)
    session.post("40" + json.dumps({"token": token}))
    response = requests.post(session.url, data=body, timeout=10)
    assert response.status_code in (200, 400, 413), (response.status_code, response.text[:200])
    if response.status_code != 200:
        assert response.json()["code"] == 3
    # The session is either gone (400 at once) or still takes requests (a close packet is answered at once).
    follow = requests.post(session.url, data=b"1", timeout=10)
    assert follow.status_code in (200, 400), follow.text[:200]
    if response.status_code != 200:
        assert follow.status_code == 400


@FUZZ
@given(text=socketio_text)
def test_websocket_text_frames(server, token, text):
    count("websocket text frames")
    ws = RawSocketIO(server.port, token)
    try:
        ws.send_raw(frame(("4" + text).encode()))
        # Either the server closed the connection, or it still answers; a half-dead connection fails both.
        assert ws.closed_by_server(timeout=0.3) or probe_alive(ws)
    finally:
        ws.close()


def api_post(server, path: str, body: object) -> requests.Response:
    return requests.post(server.url + path, data=json.dumps(body), timeout=10,
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


def assert_api_answer(response: requests.Response) -> None:
    assert response.status_code in (200, 400, 403, 404, 409, 413, 429), (response.status_code, response.text[:200])
    body = response.json()
    if response.status_code != 200:
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
        assert isinstance(body["error"]["message"], str) and KEY not in response.text


channel_names = st.one_of(st.text(max_size=30), st.sampled_from(["news", "a.b", "public:x", "a..b", "*", "**"]))
event_names = st.one_of(st.text(max_size=30), st.sampled_from(["update", "connect", "message", "tick"]))


# The optional fields of a publish (idempotency, several channels, echo suppression), plausible or hostile.
publish_options = {
    "idempotency_key": st.text(max_size=140) | st.sampled_from(["k", "k" * 128, "k" * 129, "\x00", "é"]) | json_values,
    "channels": st.lists(channel_names, max_size=5) | st.lists(st.just("a"), min_size=2, max_size=3) | json_values,
    "exclude": st.text(max_size=70) | st.sampled_from(["AbC_-123xyz", "has space"]) | json_values,
    "exclude_self": json_values,
}
publish_bodies = st.fixed_dictionaries(
    {"channel": channel_names | json_values, "event": event_names | json_values, "data": json_values},
    optional=publish_options,
)


@FUZZ
@given(body=st.one_of(json_values, publish_bodies))
def test_publish_bodies(server, body):
    count("POST /api/v1/publish bodies")
    assert_api_answer(api_post(server, "/api/v1/publish", body))


@FUZZ
@given(messages=st.lists(publish_bodies, max_size=4) | json_values)
def test_publish_batch_bodies(server, messages):
    count("POST /api/v1/publish/batch bodies")
    assert_api_answer(api_post(server, "/api/v1/publish/batch", {"messages": messages}))


@FUZZ
@given(payload=publish_bodies)
def test_client_publish_payloads(server, token, payload):
    """The client `publish` event with every option, over a real websocket: always an ack, ok or a structured error."""
    count("client publish payloads")
    ws = RawSocketIO(server.port, token)
    try:
        ack = ws.call(1, "publish", payload)
        assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
        if not ack["ok"]:
            assert isinstance(ack["error"]["code"], str) and isinstance(ack["error"]["message"], str), ack
    finally:
        ws.close()


@FUZZ
@given(body=st.one_of(
    json_values,
    st.fixed_dictionaries({"sub": st.text(max_size=300) | json_values,
                           "channels": st.lists(channel_names, max_size=5) | json_values,
                           "ttl": st.integers() | json_values},
                          optional={"publish": st.lists(channel_names, max_size=5) | json_values}),
))
def test_token_bodies(server, body):
    count("POST /api/v1/tokens bodies")
    response = api_post(server, "/api/v1/tokens", body)
    assert_api_answer(response)
    if response.status_code == 200:
        assert response.json()["token"].count(".") == 2


# The user-level actions (issue 15): each with its own fields, plausible or hostile, and a hostile sub in the URL.
user_actions = st.sampled_from(["disconnect", "unsubscribe", "revoke"])
user_bodies = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "sub": st.text(max_size=300) | json_values, "jti": st.text(max_size=140) | json_values,
    "reason": st.text(max_size=210) | json_values, "reconnect": json_values,
    "channel": channel_names | json_values, "other": json_values}))


@FUZZ
@given(action=user_actions, sub=st.text(max_size=300), body=user_bodies)
def test_user_control_bodies(server, action, sub, body):
    count("POST /api/v1/users/<sub>/... and /tokens/revoke bodies")
    path = "/api/v1/tokens/revoke" if action == "revoke" else f"/api/v1/users/{quote(sub, safe='')}/{action}"
    assert_api_answer(api_post(server, path, body))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # sockets a failed run leaves open
def test_after_fuzzing(server, bystanders):
    """Runs last: the bystanders got everything, and nothing was logged at ERROR."""
    bystanders.check(3)
    assert server.bad_log_lines() == []
    print("inputs tried:", TRIED)
