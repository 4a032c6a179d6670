"""Keep-alive that gunicorn can keep: close, and say so, when an answer leaves more body unread than gunicorn drains.

An application may answer before reading a request's body (a 413 for a body over the limit, a 401 for a wrong key).
gunicorn then drains what is left before reusing the connection, but at most 64 KiB (`gunicorn.http.parser
_DRAIN_MAX_BYTES`): past that it closes the connection after announcing `Connection: keep-alive`, and a client that
reuses it loses its next request (requests and urllib3 do not retry a POST). A chunked body the application did
not read to its end (it answered first, or gunicorn's parser found it malformed while the app read it:
integration/gunicorn_errors.py) is never drained either: close. Replaces `Response.should_close`, the one place
gunicorn decides both the header and the close (gunicorn 27.0.1), so the two agree.
"""

from __future__ import annotations

from typing import Any

from gunicorn.http import body as gunicorn_body
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http import wsgi as gunicorn_wsgi

_original_should_close = gunicorn_wsgi.Response.should_close
DRAIN_MAX_BYTES: int = vars(gunicorn_parser)["_DRAIN_MAX_BYTES"]  # private: a rename fails here, at import


def unread_body_bytes(request: Any) -> int:
    """Bytes of a Content-Length body the application has not read (0 for other framings: they are not known)."""
    reader = getattr(getattr(request, "body", None), "reader", None)
    return reader.length if isinstance(reader, gunicorn_body.LengthReader) else 0


def chunked_body_unfinished(request: Any) -> bool:
    """A chunked body not read to its last chunk (gunicorn's ChunkedReader drops its parser only at the end)."""
    reader = getattr(getattr(request, "body", None), "reader", None)
    return isinstance(reader, gunicorn_body.ChunkedReader) and reader.parser is not None


def _should_close(self: gunicorn_wsgi.Response) -> bool:
    if not self.must_close and (unread_body_bytes(self.req) >= DRAIN_MAX_BYTES or chunked_body_unfinished(self.req)):
        self.must_close = True  # the drain would give up: close, with `Connection: close` in this very answer
    return _original_should_close(self)


def install_keepalive_close() -> None:
    """Call in the worker process (gunicorn.conf.py's post_worker_init)."""
    gunicorn_wsgi.Response.should_close = _should_close  # type: ignore[method-assign]
