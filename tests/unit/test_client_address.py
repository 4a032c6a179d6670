"""The client address behind proxies: X-Forwarded-For believed only from TRUSTED_PROXIES, never its forged left."""

from __future__ import annotations

import ipaddress

import pytest

from utils.client_address import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("203.0.113.9", None, "203.0.113.9"),
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's header is ignored
    ("10.0.0.5", "198.51.100.1", "198.51.100.1"),
    ("10.0.0.5", "1.2.3.4, 198.51.100.1", "198.51.100.1"),  # the client wrote 1.2.3.4 itself
    ("10.0.0.5", "198.51.100.1, 10.0.0.7", "198.51.100.1"),  # two proxies
    ("10.0.0.5", "198.51.100.1:5555", "198.51.100.1"),
    ("::1", "[2001:db8::1]:443", "2001:db8::1"),
    ("10.0.0.5", "", "10.0.0.5"),
    ("10.0.0.5", "not-an-address, 10.0.0.7", "10.0.0.5"),
    ("10.0.0.5", "10.0.0.9, 10.0.0.7", "10.0.0.9"),
])
def test_client_address(peer, forwarded, expected):
    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_address(environ, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer():
    assert client_address({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}) == "10.0.0.5"
