"""Puts the dashboard under live load and saves docs/dashboard.png, printing what the page had to keep up with.

    .venv/bin/python -m tests.browser.screenshot [--clients 1000] [--rate 100] [--seconds 40]

A real server (start.sh), `--clients` websocket clients from bench/loadgen.py (token holders and anonymous ones in
three channels), a backend publishing `--rate` messages per second over the HTTP API, a polling client that comes
and goes every second, and the dashboard in headless Chromium watching one channel. Not a test: it makes the
README's picture and the figures in the dashboard section.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import requests
import socketio

from bench.loadgen import LoadGen
from tests.browser.conftest import API_KEY, CHROMIUM, CHROMIUM_ARGS, ConsoleLog, log_in
from tests.server import ROOT, ServerProcess

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# channel -> (share of the clients, sub of their token or None for anonymous)
AUDIENCES = {"orders.eu": (0.4, "shop-eu"), "orders.us": (0.3, "shop-us"), "public:prices": (0.3, None)}
EVENTS = {"orders.eu": ["created", "paid", "shipped"], "orders.us": ["created", "paid"], "public:prices": ["tick"]}

# Counts long main-thread tasks in the page, so the figures say whether rendering keeps up.
LONG_TASK_PROBE = """() => { window.__longTasks = []; new PerformanceObserver(list => {
  for (const e of list.getEntries()) window.__longTasks.push(e.duration); }).observe({entryTypes: ["longtask"]}); }"""


def token_for(server: ServerProcess, sub: str, channel: str) -> str:
    body: dict[str, Any] = {"sub": sub, "channels": [channel], "ttl": 3600}
    response = requests.post(server.url + "/api/v1/tokens", json=body, headers=AUTH, timeout=5)
    response.raise_for_status()
    return response.json()["token"]


def publish_steadily(server: ServerProcess, rate: int, stop: threading.Event, sent: list[int]) -> None:
    """`rate` messages per second in batches of a tenth of a second."""
    session = requests.Session()
    per_batch = max(1, rate // 10)
    sequence = 0
    next_batch = time.monotonic()
    while not stop.is_set():
        messages: list[dict[str, Any]] = []
        for _ in range(per_batch):
            channel = random.choice(list(EVENTS))
            sequence += 1
            data = {"seq": sequence, "amount": round(random.uniform(5, 500), 2), "items": random.randint(1, 6)}
            messages.append({"channel": channel, "event": random.choice(EVENTS[channel]), "data": data})
        try:
            response = session.post(server.url + "/api/v1/publish/batch", json={"messages": messages}, headers=AUTH,
                                    timeout=5)
            sent[0 if response.status_code == 200 else 1] += len(messages)
        except requests.RequestException:
            sent[1] += len(messages)
        next_batch += 0.1
        stop.wait(max(0.0, next_batch - time.monotonic()))


def churn(server: ServerProcess, stop: threading.Event) -> None:
    """A polling client that connects and leaves every second, so the per-minute figures move."""
    while not stop.is_set():
        client = socketio.Client(reconnection=False)
        try:
            client.connect(server.url, transports=["polling"], wait_timeout=5)
            stop.wait(0.7)
            client.disconnect()
        except socketio.exceptions.ConnectionError:
            stop.wait(1)
        stop.wait(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100, help="messages published per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the load runs before the picture")
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--transport", default="shared", choices=["shared", "threaded"],
                        help="WEBSOCKET_TRANSPORT of the server")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    env = {"ALLOW_ANONYMOUS": "1", "GUNICORN_THREADS": str(args.clients + 400), "PING_INTERVAL": "25",
           "PING_TIMEOUT": "20", "LOG_LEVEL": "INFO", "WEBSOCKET_TRANSPORT": args.transport}
    stop = threading.Event()
    sent = [0, 0]  # accepted, refused or timed out
    with ServerProcess(**env) as server, LoadGen(4) as load, sync_playwright() as playwright:
        for channel, (share, sub) in AUDIENCES.items():
            auth = {"token": token_for(server, sub, channel)} if sub else None
            opened = load.open("127.0.0.1", server.port, int(args.clients * share), auth=auth, subscribe=channel)
            print(f"{channel}: {opened['connected']} connected, {opened['failed']} failed")
        workers = [threading.Thread(target=publish_steadily, args=(server, args.rate, stop, sent), daemon=True),
                   threading.Thread(target=churn, args=(server, stop), daemon=True)]
        for worker in workers:
            worker.start()

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(120_000)  # generous: the load runs on the same machine
        console = ConsoleLog()
        page.on("console", lambda message: console.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: console.page_errors.append(str(error)))
        log_in(page, server.url)
        page.evaluate(LONG_TASK_PROBE)
        page.fill("#watch-channel", "orders.eu")
        page.click("#watch-form button[type=submit]")
        started = time.monotonic()
        time.sleep(args.seconds)
        # As an operator would: pause the stream, then expand an event.
        page.click("#pause")
        time.sleep(1.5)  # the newest rows' highlight fades
        page.click("#events li:nth-child(3) summary")
        figures = page.evaluate("""() => ({
            clients: document.getElementById('clients-total').textContent,
            published: document.getElementById('published-per-second').textContent,
            delivered: document.getElementById('delivered-per-second').textContent,
            eventRows: document.querySelectorAll('#events li').length,
            clientRows: document.querySelectorAll('#clients tr').length,
            domNodes: document.getElementsByTagName('*').length,
            longTasks: window.__longTasks.length,
            longestTaskMs: Math.round(Math.max(0, ...window.__longTasks)),
        })""")
        figures.update(seconds=round(time.monotonic() - started, 1), published_total=sent[0], publish_failures=sent[1],
                       console_errors=console.errors(), page_state=page.text_content("#connection-state"),
                       server_notes=[line for line in server.log().splitlines()
                                     if "WARNING" in line or "dropped" in line or "upgrade" in line][-8:])
        print(json.dumps(figures, indent=2), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out, full_page=True, timeout=120_000)
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        browser.close()
        print("saved", args.out)


if __name__ == "__main__":
    main()
