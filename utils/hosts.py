"""Nothing is built from an untrusted `Host`: ALLOWED_HOSTS refuses foreign ones, and paths never redirect."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from werkzeug.exceptions import SecurityError
from werkzeug.routing import Map
from werkzeug.wsgi import get_host

_BODY = json.dumps({"error": {"code": "invalid_host", "message": "This server does not answer to that Host."}})


class HostAllowList:
    """WSGI middleware around the whole app (the Socket.IO path included, which Flask's TRUSTED_HOSTS never sees)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = list(hosts)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            get_host(environ, self.hosts)  # werkzeug's check: the port is ignored, ".example.com" allows subdomains
        except SecurityError:
            body = _BODY.encode()
            start_response("400 Bad Request", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


class LiteralPathMap(Map):
    """werkzeug answers `/static//x` with a 308 to an absolute URL built from the request's Host (an open redirect
    with a forged Host); with merging off such a path is simply not found. No route ends in `/` but the root, so
    no other routing redirect exists."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("merge_slashes", False)
        super().__init__(*args, **kwargs)
