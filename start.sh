#!/usr/bin/env bash
# Starts Signalboard: one gunicorn gthread worker; settings come from the environment (see README).
set -euo pipefail
cd "$(dirname "$0")"

# Prefer the project's virtualenv when there is one (make setup creates it; the Docker image puts its own on PATH).
if [ -x .venv/bin/gunicorn ]; then
  PATH="$PWD/.venv/bin:$PATH"
fi

# A bad variable stops here with one line naming it, before gunicorn prints anything.
python -m config
# So does a library that is not the version integration/ was written for (integration/pins.py).
python -m integration

exec gunicorn --config gunicorn.conf.py --workers 1 "${SIGNALBOARD_APP:-app:create_app()}"
