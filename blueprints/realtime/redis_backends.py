"""The hub's backends with REDIS_URL: history, presence and delivery through Redis, shared by every instance."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from hub.backends import Backends
from hub.fanout import Delivery
from hub.presence import PresenceChange
from hub.redis_client import connect
from hub.redis_fanout import RedisFanout
from hub.redis_presence import RedisPresenceRegistry
from integration.redis_manager import ClusterQueueManager
from utils.background import StartTask
from utils.redis_health import RedisHealth
from utils.redis_urls import is_sentinel_url

log = logging.getLogger(__name__)


def redis_backends(config: Mapping[str, Any], server: Any, delivery: Delivery, start_task: StartTask,
                   reaped: Callable[[list[PresenceChange]], None]) -> Backends:
    """Redis history and presence, RedisFanout for joins, and the health monitor readiness relies on (started by the
    first request or join). Delivery itself runs in the cluster manager's listener, which the server was built with
    (integration/manager.py); `reaped` hears the leaves of instances that stopped heartbeating."""
    manager = server.manager
    if not isinstance(manager, ClusterQueueManager):
        raise RuntimeError("REDIS_URL is set but the Socket.IO server was built without the cluster manager")
    history = manager.history
    presence = RedisPresenceRegistry(connect(config["REDIS_URL"]), history.keys, config["INSTANCE_ID"],
                                     config["PRESENCE_TTL"])
    health = RedisHealth(history.client, manager, presence, start_task, announce=lambda change: reaped([change]),
                         presence_interval=config["PRESENCE_TTL"] / 3, sentinel=is_sentinel_url(config["REDIS_URL"]))
    fanout = RedisFanout(history, manager, delivery, on_use=health.ensure_started)
    log.info("scale-out: Redis at key prefix %r, instance %s", history.keys.prefix, config["INSTANCE_ID"])
    return Backends(history=history, presence=presence, fanout=fanout, readiness_name="redis",
                    readiness=health.check, on_request=health.ensure_started)
