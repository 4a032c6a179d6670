"""Channel/event name rules and grant patterns."""

from __future__ import annotations

import pytest

from hub.channels import (
    can_publish,
    can_subscribe,
    is_public,
    pattern_matches,
    validate_channel,
    validate_event,
    validate_pattern,
)
from hub.errors import InvalidChannel, InvalidEvent


@pytest.mark.parametrize("name", ["a", "orders", "orders.eu", "public:news", "a_b-c:d.e", "x" * 128, "A9.z_:-"])
def test_valid_channels(name):
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "1 to 128"),
        ("x" * 129, "1 to 128"),
        ("with space", "letters, digits"),
        ("slash/no", "letters, digits"),
        ("star*", "letters, digits"),
        ("é", "letters, digits"),
        ("orders..eu", "must not be empty"),
        (".orders", "must not be empty"),
        ("orders.", "must not be empty"),
        (None, "string"),
        (12, "string"),
        (["a"], "string"),
    ],
)
def test_invalid_channels(name, reason):
    with pytest.raises(InvalidChannel) as info:
        validate_channel(name)
    assert reason in info.value.message
    assert info.value.status == 400
    assert info.value.to_dict()["code"] == "invalid_channel"


@pytest.mark.parametrize("event", ["update", "order.created", "a" * 64, "tick:1", "message"])
def test_valid_events(event):
    assert validate_event(event) == event


@pytest.mark.parametrize(
    "event",
    [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        "signalboard:presence",
        "signalboard:anything",
    ],
)
def test_reserved_events_refused(event):
    with pytest.raises(InvalidEvent, match="reserved"):
        validate_event(event)


@pytest.mark.parametrize("event", ["", "a" * 65, "bad event", "x/y", None, 3])
def test_invalid_events(event):
    with pytest.raises(InvalidEvent):
        validate_event(event)


def test_public_prefix():
    assert is_public("public:news")
    assert not is_public("news")
    assert not is_public("publicnews")


@pytest.mark.parametrize(
    "pattern, channel, expected",
    [
        ("orders.eu", "orders.eu", True),
        ("orders.eu", "orders.us", False),
        ("orders.eu", "orders.eu.paris", False),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.eu.paris", False),
        ("orders.*", "ordersx.eu", False),
        ("*.eu", "orders.eu", True),
        ("*.eu", "orders.us", False),
        ("*", "orders", True),
        ("*", "orders.eu", False),
        ("orders.**", "orders.eu", True),
        ("orders.**", "orders.eu.paris", True),
        ("orders.**", "orders", False),
        ("**", "anything", True),
        ("**", "any.thing.at.all", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("public:*", "public:news", False),  # a wildcard is a whole segment, never part of one
    ],
)
def test_pattern_matching(pattern, channel, expected):
    assert pattern_matches(pattern, channel) is expected


@pytest.mark.parametrize("pattern", ["orders.*", "**", "*", "a.**", "*.b.*", "public:news"])
def test_valid_patterns(pattern):
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["**.a", "a.**.b", "ord*", "a..b", "", "a b", None, "x" * 129,
                                     "ab." + "a." * 62 + "**"])  # 128 as a name, 129 as a pattern
def test_invalid_patterns(pattern):
    with pytest.raises(InvalidChannel):
        validate_pattern(pattern)


def test_subscribe_needs_grant_unless_public():
    assert can_subscribe([], "public:news")
    assert not can_subscribe([], "orders.eu")
    assert can_subscribe(["orders.*"], "orders.eu")
    assert not can_subscribe(["orders.*"], "billing.eu")


def test_publish_always_needs_explicit_grant():
    assert not can_publish([], "public:news")
    assert can_publish(["public:news"], "public:news")
    assert can_publish(["**"], "orders.eu")
    assert not can_publish(["orders.eu"], "orders.us")
