"""Per-address session limits behind real nginx (deploy/nginx.conf) with TRUSTED_PROXIES: clients are told apart by
the address nginx forwards, and a forged X-Forwarded-For is worth nothing, through nginx or straight from an untrusted
peer."""

from __future__ import annotations

import pytest

from tests.eio import EIO_PATH
from tests.reliability.attack import close_sessions, session_from
from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]

CAP = 3


@pytest.fixture(scope="module")
def instance():
    # nginx reaches the instance from 127.0.0.1; only that peer's X-Forwarded-For is believed.
    with ServerProcess(TRUSTED_PROXIES="127.0.0.1/32", MAX_SESSIONS_PER_ADDRESS=CAP, CONNECT_RATE_PER_ADDRESS=0,
                       ALLOW_ANONYMOUS=1) as server:
        yield server
        assert server.bad_log_lines() == []
    close_sessions()


@pytest.fixture(scope="module")
def proxy(instance):
    from tests.scale.processes import NginxProcess

    nginx = NginxProcess([instance.port]).start()
    yield nginx
    nginx.close()


def handshakes(url: str, source: str, count: int, forged: str | None = None) -> list[int]:
    session = session_from(source)
    statuses = []
    for n in range(count):
        headers = {"X-Forwarded-For": f"{forged}{n}"} if forged else {}
        statuses.append(session.get(url + EIO_PATH.format(transport="polling"), headers=headers, timeout=5)
                        .status_code)
    return statuses


def test_clients_behind_nginx_are_told_apart(proxy):
    assert handshakes(proxy.url, "127.0.0.2", CAP + 1) == [200] * CAP + [429]
    assert handshakes(proxy.url, "127.0.0.3", CAP) == [200] * CAP  # another client: its own slots


def test_a_forged_forwarded_for_through_nginx_is_ignored(proxy):
    # nginx appends the address it saw: the rightmost untrusted hop is still the client's own.
    assert handshakes(proxy.url, "127.0.0.4", CAP + 1, forged="10.9.9.") == [200] * CAP + [429]


def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(instance):
    # Straight to the instance from 127.0.0.5, which is not a trusted proxy: its header names nobody.
    assert handshakes(instance.url, "127.0.0.5", CAP + 1, forged="10.8.8.") == [200] * CAP + [429]
