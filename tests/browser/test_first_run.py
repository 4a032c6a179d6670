"""A newcomer's first minutes in headless Chromium against a development server: log in with the password the
start-up block printed, see demo traffic within 5 s, take the "Connect a client" panel's snippets and run them all:
the JavaScript one in Node (socket.io-client from tests/js), the Python one in this process, the curl one in bash."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time

import pytest

from tests.browser.conftest import log_in
from tests.conftest import JS_DIR
from tests.integration.test_first_run import BANNER_TITLE, banner_field, development

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_demo_traffic_and_every_snippet_work(server_factory, open_page, node, tmp_path):
    server = server_factory(**development(tmp_path))
    server.wait_until(lambda: BANNER_TITLE in server.log(), what="the start-up block")
    password = banner_field(server.log(), "Dashboard").split("password: ")[1]
    api_key = banner_field(server.log(), "API key")

    page, console = open_page()
    log_in(page, server.url, password)
    logged_in = time.monotonic()
    page.wait_for_selector("#events li .ch:text-matches('^demo\\\\.ticker #')", timeout=5000)
    assert time.monotonic() - logged_in < 5
    assert page.eval_on_selector_all("#watched li", "items => items.map(i => i.firstChild.textContent)") == [
        "demo.ticker", "demo.jobs", "demo.hello"]

    channel = "snippets.check"
    page.fill("#connect-channel", channel)
    page.click("#connect-form button[type=submit]")
    page.wait_for_selector("#snippets:not([hidden])")
    snippets = {lang: page.text_content(f"#snippet-{lang}") for lang in ("javascript", "python", "curl")}
    assert channel in page.text_content("#snippets-status")

    # JavaScript, as a user would run it: an ES module next to a node_modules holding socket.io-client.
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    (tmp_path / "snippet.mjs").write_text(snippets["javascript"])
    js = subprocess.Popen([node, str(tmp_path / "snippet.mjs")], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    js_lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [js_lines.put(line) for line in js.stdout], daemon=True).start()

    # Python, in this process: the snippet's own code, its print captured, its sio.wait() ended by disconnecting.
    py_lines: queue.Queue[tuple] = queue.Queue()
    namespace: dict = {"print": lambda *args: py_lines.put(args)}
    py = threading.Thread(target=exec, args=(snippets["python"], namespace), daemon=True)
    py.start()
    try:
        assert wait_for(js_lines, lambda line: line.startswith('subscribed {"ok":true')), "JS snippet did not subscribe"
        assert wait_for(py_lines, lambda args: args[0] == "subscribed" and args[1]["ok"] is True)

        done = subprocess.run(["bash", "-c", snippets["curl"]], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "SIGNALBOARD_API_KEY": api_key}, check=False)
        assert '"channel":"' + channel + '"' in done.stdout, done.stdout + done.stderr

        assert wait_for(js_lines, lambda line: line.startswith('hello {"text":"hello from curl"}') and channel in line)
        assert wait_for(py_lines, lambda args: args[:2] == ("hello", {"text": "hello from curl"})
                        and args[2]["channel"] == channel)
    finally:
        js.kill()  # by PID
        js.wait(timeout=5)
        js.stdout.close()
        if "sio" in namespace:
            namespace["sio"].disconnect()
        py.join(timeout=5)
    assert not py.is_alive()
    assert console.errors() == []
    assert server.bad_log_lines() == []


def wait_for(lines: queue.Queue, predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            if predicate(lines.get(timeout=left)):
                return True
        except queue.Empty:
            break
    return False
