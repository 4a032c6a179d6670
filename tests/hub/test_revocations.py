"""The memory Revocations store: revoked until the ttl lapses, then forgotten (bounded by what is live)."""

from __future__ import annotations

from hub.revocations import MemoryRevocations


def test_revoked_until_the_ttl_lapses():
    now = [100.0]
    store = MemoryRevocations(clock=lambda: now[0])
    assert not store.is_revoked("login:a")
    store.revoke("login:a", 10)
    store.revoke("login:b", 30)
    assert store.is_revoked("login:a") and store.is_revoked("login:b") and not store.is_revoked("login:c")
    now[0] += 10
    assert not store.is_revoked("login:a") and store.is_revoked("login:b")
    assert len(store) == 1


def test_a_second_revocation_never_shortens_the_first():
    now = [0.0]
    store = MemoryRevocations(clock=lambda: now[0])
    store.revoke("jti:x", 60)
    store.revoke("jti:x", 5)
    now[0] += 30
    assert store.is_revoked("jti:x")
    now[0] += 30
    assert not store.is_revoked("jti:x") and len(store) == 0


def test_each_entry_remembers_when_it_was_revoked_and_keeps_the_later_time():
    now, wall = [0.0], [1000.5]
    store = MemoryRevocations(clock=lambda: now[0], wall=lambda: wall[0])
    assert store.revoke("sub:alice", 60) == 1000.5
    wall[0] = 990.0  # a clock stepping back never makes a revocation cover less
    assert store.revoke("sub:alice", 60) == 1000.5
    assert store.revoked_at(["sub:alice", "sub:bob"]) == [1000.5, None]


def test_a_sub_revocation_covers_tokens_issued_until_then_and_a_jti_one_token():
    from hub.revocations import channel_key, channel_revoked, jti_key, sub_key, token_revoked

    now, wall = [0.0], [1000.5]
    store = MemoryRevocations(clock=lambda: now[0], wall=lambda: wall[0])
    store.revoke(sub_key("alice"), 60)
    assert token_revoked(store, "alice", "j1", iat=999)
    assert token_revoked(store, "alice", None, iat=1000)  # the same second: revoked with it (iat has no fraction)
    assert not token_revoked(store, "alice", "j2", iat=1001)
    assert not token_revoked(store, "bob", "j1", iat=999)
    store.revoke(jti_key("j9"), 60)
    assert token_revoked(store, "bob", "j9", iat=5000) and not token_revoked(store, "bob", None, iat=5000)
    store.revoke(channel_key("alice", "orders.eu"), 60)
    assert channel_revoked(store, "alice", "orders.eu", iat=1000)
    assert not channel_revoked(store, "alice", "orders.eu", iat=1001)
    assert not channel_revoked(store, "alice", "orders.us", iat=1000)
    now[0] += 60
    assert not token_revoked(store, "alice", "j1", iat=999) and len(store) == 0
