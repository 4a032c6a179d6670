#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: the venv with test tools, the Debian packages for the real
# parts (redis-server, redis-sentinel, nginx, Chromium, dockerd, debootstrap) and the npm packages of the JavaScript
# interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
touch .venv/.runtime

debian_packages=(redis-server redis-sentinel nginx chromium chromium-driver docker.io docker-compose debootstrap)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# socket.io-client for the JavaScript interop tests, exactly as locked
(cd tests/js && npm ci --no-audit --no-fund --silent)
