"""A connect whose revocation check cannot be answered (Redis out of connections or down) is refused with the
`unavailable` connect_error, never an unhandled error with a traceback."""

from __future__ import annotations

import logging

from blueprints.realtime.services import EXTENSION_KEY
from extensions import socketio
from hub.errors import Unavailable
from tests.conftest import UNIT_CONFIG


def test_a_revocation_check_that_cannot_answer_refuses_the_connect_cleanly(app, client, caplog):
    status = client.post("/api/v1/tokens", json={"sub": "alice", "channels": ["orders"]},
                         headers={"Authorization": f"Bearer {UNIT_CONFIG['API_KEYS'][0]}"})
    assert status.status_code == 200, status.get_json()
    token = status.get_json()["token"]
    services = app.extensions[EXTENSION_KEY]

    def unavailable(keys):
        raise Unavailable("message store unavailable, retry shortly", retry_after=1.0)

    services.revocations.revoked_at = unavailable
    with caplog.at_level(logging.ERROR):
        sio = socketio.test_client(app, flask_test_client=client, auth={"token": token})
    assert not sio.is_connected()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
