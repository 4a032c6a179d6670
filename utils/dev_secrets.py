"""Development only: the secrets a first run generates, kept in one git-ignored file so restarts keep them."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

# What the file holds, and how each value is made when it is first written.
_GENERATORS = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "API_KEY": lambda: "dev-" + secrets.token_urlsafe(24),
    "DASHBOARD_PASSWORD": lambda: secrets.token_urlsafe(12),
}


class DevSecretsError(ValueError):
    """The file exists but cannot be used, or cannot be written; the message says which and what to do."""


def load_or_create(path: Path) -> dict[str, str]:
    """The secrets kept in `path`, written there first (mode 0600) if it does not exist yet.

    Several processes start at once (start.sh's check, the gunicorn master, its worker): the file is written to a
    temporary name and linked into place, which fails if another got there first, so all of them read one set.
    """
    if not path.exists():
        values = {name: make() for name, make in _GENERATORS.items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(values, out, indent=2)
                    out.write("\n")
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process wrote it first: read theirs
            finally:
                os.unlink(temporary)
        except OSError as exc:
            raise DevSecretsError(f"{path} could not be written ({exc.strerror})") from None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DevSecretsError(f"{path} is not readable JSON: delete it to generate new secrets") from None
    if not isinstance(values, dict) or not all(isinstance(values.get(name), str) and values[name]
                                               for name in _GENERATORS):
        raise DevSecretsError(f"{path} lacks {', '.join(_GENERATORS)}: delete it to generate new secrets")
    return {name: values[name] for name in _GENERATORS}
