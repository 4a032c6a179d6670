"""User-level control on one instance without Redis: the actions are applied in-process (issue 15)."""

from __future__ import annotations

import pytest

from tests.integration import user_control as scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def single():
    from tests.server import ServerProcess

    with ServerProcess(API_RATE_LIMIT=0, CLIENT_RATE_LIMIT=0) as server:
        yield server
        assert server.bad_log_lines() == [], server.log()[-3000:]


def test_disconnect_user(single):
    assert scenario.disconnect_user(single, single, instances=1) < scenario.WITHIN


@pytest.mark.parametrize("run", [scenario.unsubscribe_user, scenario.revoke_sub, scenario.revoke_jti,
                                 scenario.revoke_racing_connects, scenario.unsubscribe_racing_subscribes],
                         ids=lambda run: run.__name__)
def test_action(single, run):
    run(single, single)


def test_bad_input_is_refused_with_the_error_shape(single):
    scenario.bad_input(single)
