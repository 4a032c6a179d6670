"""A real webhook receiver and authorization backend for the tests: its own HTTP server on 127.0.0.1 in a
subprocess, recording every request it gets to a JSON-lines file and answering as the test tells it to.

    python tests/webhooks/receiver.py PORT RECORD_FILE

POST /_control with a JSON object changes how it answers (merged into the current behaviour):
  fail_first: answer 500 to the next N webhook POSTs      delay: seconds to wait before answering
  mode: ok | redirect | huge | endless | slow_headers      auth: {"<sub or *>": answer} for /auth (see below)
/auth answers {"type": "connect"} with auth["connect"], {"type": "subscribe"} with auth["subscribe:<channel>"] or
auth["subscribe"], and {"type": "refresh"} with auth["refresh"]: each {"status": 200, "body": {...}, "delay": s}.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE: dict = {"fail_first": 0, "delay": 0.0, "mode": "ok", "auth": {}}
LOCK = threading.Lock()  # guards STATE and the record file


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"{}", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/_control":
            with LOCK:
                STATE.update(json.loads(raw))
            return self._answer(200)
        with LOCK:
            behaviour = dict(STATE)
            failing = self.path.startswith("/hook") and STATE["fail_first"] > 0
            if failing:
                STATE["fail_first"] -= 1
        if self.path.startswith("/auth"):
            return self._auth(raw, behaviour)
        if behaviour["delay"]:
            time.sleep(behaviour["delay"])
        mode = behaviour["mode"]
        # What this request is answered with (0: never a complete answer).
        status = 500 if failing else {"redirect": 302, "slow_headers": 0}.get(mode, 200)
        self._record(raw, status)
        if failing:
            return self._answer(500, b'{"error": "failing on purpose"}')
        if mode == "redirect":
            return self._answer(302, b"", {"Location": f"http://127.0.0.1:{sys.argv[1]}/elsewhere"})
        if mode == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(1 << 14):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return None
        if mode == "endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(100_000):  # bounded: about 10 minutes
                    self.wfile.write(b"1\r\nx\r\n")
                    self.wfile.flush()
                    time.sleep(0.005)
            except OSError:
                pass
            return None
        if mode == "slow_headers":
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return None
        return self._answer(200, b'{"ok": true}')

    def _auth(self, raw: bytes, behaviour: dict) -> None:
        request = json.loads(raw)
        rules = behaviour["auth"]
        rule = rules.get(f"{request.get('type')}:{request.get('channel')}") or rules.get(request.get("type")) or {
            "status": 403, "body": {"message": "no rule"}}
        self._record(raw, rule.get("status", 200))
        if rule.get("delay"):
            time.sleep(rule["delay"])
        self._answer(rule.get("status", 200), json.dumps(rule.get("body", {})).encode())

    def _record(self, raw: bytes, status: int) -> None:
        entry = {
            "path": self.path,
            "at": time.time(),
            "status": status,
            "headers": {k: v for k, v in self.headers.items()},
            "body": raw.decode(),
        }
        with LOCK, open(sys.argv[2], "a", encoding="utf-8") as record:
            record.write(json.dumps(entry) + "\n")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
