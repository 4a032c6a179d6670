"""The Redis URL forms REDIS_URL accepts, parsed without redis-py so config.py can check them before the app exists."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class SentinelTarget:
    """A `redis+sentinel://[user:password@]host1:port1,host2:port2/<db>/<service>` URL, python-socketio's form."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def default_min_replicas(url: str) -> int:
    """REDIS_MIN_REPLICAS when unset: behind Sentinel a publish waits for one replica, on a lone Redis for none."""
    return 1 if is_sentinel_url(url) else 0


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinels, service and db of a sentinel URL; ValueError (saying what is wrong) for anything else."""
    parsed = urlparse(url)
    if parsed.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    sentinels = []
    for host_port in parsed.netloc.rpartition("@")[2].split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each Sentinel must be host:port, got {host_port!r}")
        sentinels.append((host.strip("[]"), int(port)))
    parts = parsed.path.split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        raise ValueError("the path must be /<db>/<service>, e.g. /0/mymaster")
    return SentinelTarget(tuple(sentinels), parts[2], int(parts[1]),
                          unquote(parsed.username) if parsed.username else None,
                          unquote(parsed.password) if parsed.password else None)
