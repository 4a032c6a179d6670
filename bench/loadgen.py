"""Many cheap Socket.IO clients: raw websockets driven by selector loops in a few processes.

python-socketio clients cost several threads each, so at a thousand clients the benchmark would
measure its own client. Here each worker process multiplexes hundreds of non-blocking sockets and
speaks just enough Engine.IO v4 / Socket.IO v5 text protocol (open, ping/pong, namespace connect,
one acked event, broadcast receipt, close). The parent drives the workers over pipes.
"""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import os
import re
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

SOCKET_IO_PATH = "/socket.io/?EIO=4&transport=websocket"
# Publishers put their wall-clock send time under this key; a distinctive name so that a server
# meta object (Signalboard adds its own "ts") is never mistaken for it.
SEND_TS_KEY = "bench_ts"
_SEND_TS_RE = re.compile(rb'"' + SEND_TS_KEY.encode() + rb'":\s*([0-9.eE+-]+)')
_SEQ_RE = re.compile(rb'"bench_seq":\s*([0-9]+)')

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Connection states.
HANDSHAKE, EIO_OPEN, SIO_CONNECT, SUBSCRIBING, READY, CLOSING, CLOSED = range(7)
STATE_NAMES = ("handshake", "eio_open", "sio_connect", "subscribing", "ready", "closing", "closed")


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 requires clients to mask)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if n:
        repeated = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return header + key + payload


@dataclass
class _Client:
    sock: socket.socket
    index: int
    started: float
    state: int = HANDSHAKE
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    fragments: bytearray = field(default_factory=bytearray)
    connected_at: float = 0.0
    close_started: float = 0.0
    error: str = ""
    closed_by_server: bool = False


class _Worker:
    """One process's selector loop over its share of the clients."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe.fileno(), selectors.EVENT_READ, None)
        self.clients: list[_Client] = []
        self.pending_open: list[int] = []  # indices of clients still to start connecting
        self.opts: dict[str, Any] = {}
        self.open_base = 0
        self.open_deadline = 0.0
        self.open_reply_due = False
        self.latencies: list[float] = []
        self.seq_counts: dict[int, int] = {}
        self.first_recv = 0.0
        self.last_recv = 0.0
        self.received = 0
        self.min_seq = 0
        self.stale = 0
        self.close_times: list[float] = []
        self.close_unanswered = 0
        self.running = True

    # ---- socket plumbing -------------------------------------------------------------------

    def _send(self, c: _Client, data: bytes) -> None:
        if c.state == CLOSED:
            return
        if not c.outbuf:
            try:
                sent = c.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._fail(c, f"send: {exc.__class__.__name__}")
                return
            data = data[sent:]
            if not data:
                return
            c.outbuf += data
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        else:
            c.outbuf += data

    def _send_text(self, c: _Client, text: str) -> None:
        self._send(c, _frame(OP_TEXT, text.encode()))

    def _flush(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(c, f"send: {exc.__class__.__name__}")
            return
        del c.outbuf[:sent]
        if not c.outbuf:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def _fail(self, c: _Client, reason: str) -> None:
        if c.state == CLOSED:
            return
        if c.state != READY and c.state != CLOSING:
            c.error = reason
        elif c.state == READY:
            c.closed_by_server = True
        elif reason != "closed":
            self.close_times.append(time.time() - c.close_started)
        c.state = CLOSED
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _start_connect(self, index: int) -> None:
        host, ports = self.opts["host"], self.opts["ports"]
        port = ports[index % len(ports)]  # several instances of one server: its clients split evenly over them
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        c = _Client(sock=sock, index=index, started=time.time())
        self.clients.append(c)
        err = sock.connect_ex((host, port))
        if err not in (0, 115, 11):  # 0, EINPROGRESS, EAGAIN
            c.state = CLOSED
            c.error = f"connect errno {err}"
            sock.close()
            return
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {SOCKET_IO_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        # The request waits in outbuf until the socket is writable (connect finished).
        c.outbuf += request
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    # ---- protocol ----------------------------------------------------------------------------

    def _on_readable(self, c: _Client) -> None:
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(c, f"recv: {exc.__class__.__name__}")
            return
        if not data:
            self._fail(c, "eof")
            return
        c.inbuf += data
        if c.state == HANDSHAKE:
            end = c.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(c.inbuf[: c.inbuf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self._fail(c, "http " + status.decode("latin-1", "replace")[:60])
                return
            del c.inbuf[: end + 4]
            c.state = EIO_OPEN
        self._parse_frames(c)

    def _parse_frames(self, c: _Client) -> None:
        buf = c.inbuf
        pos = 0
        while c.state != CLOSED:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if b1 & 0x80:  # servers must not mask; tolerate it anyway
                head += 4
            if len(buf) - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if b1 & 0x80:
                key = buf[pos + head - 4 : pos + head]
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            pos += head + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_PING:
                self._send(c, _frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                if c.state != CLOSING:
                    self._send(c, _frame(OP_CLOSE, payload[:2]))
                self._fail(c, "server close")
            elif opcode in (OP_TEXT, OP_CONT):
                if not fin:
                    c.fragments += payload
                    continue
                if c.fragments:
                    payload = bytes(c.fragments) + payload
                    c.fragments.clear()
                self._on_packet(c, payload)
        del buf[:pos]

    def _on_packet(self, c: _Client, pkt: bytes) -> None:
        if not pkt:
            return
        kind = pkt[0:1]
        if kind == b"4":
            sio = pkt[1:2]
            if sio == b"2":
                self._on_event(pkt)
            elif sio == b"3" and c.state == SUBSCRIBING:
                self._on_ack(c, pkt)
            elif sio == b"0" and c.state == SIO_CONNECT:
                if self.opts.get("subscribe"):
                    c.state = SUBSCRIBING
                    sub = json.dumps(["subscribe", {"channel": self.opts["subscribe"]}])
                    self._send_text(c, "421" + sub)
                else:
                    self._ready(c)
            elif sio == b"4":
                self._fail(c, "connect_error " + pkt[2:120].decode("utf-8", "replace"))
            elif sio == b"1" and c.state == READY:
                c.closed_by_server = True
        elif kind == b"2" and c.state != CLOSING:  # nothing may follow our close frame
            self._send_text(c, "3" + pkt[1:].decode())
        elif kind == b"0" and c.state == EIO_OPEN:
            c.state = SIO_CONNECT
            auth = self.opts.get("auth")
            self._send_text(c, "40" + (json.dumps(auth) if auth is not None else ""))
        elif kind == b"1":
            self._fail(c, "engine.io close")

    def _on_ack(self, c: _Client, pkt: bytes) -> None:
        # 43<id>[<ack args>]; a Signalboard refusal is {"ok": false, ...}.
        start = pkt.find(b"[")
        try:
            args = json.loads(pkt[start:])
        except ValueError:
            self._fail(c, "bad ack")
            return
        if args and isinstance(args[0], dict) and args[0].get("ok") is False:
            self._fail(c, "subscribe refused " + json.dumps(args[0])[:100])
            return
        self._ready(c)

    def _ready(self, c: _Client) -> None:
        c.state = READY
        c.connected_at = time.time()

    def _on_event(self, pkt: bytes) -> None:
        now = time.time()
        m = _SEND_TS_RE.search(pkt)
        if not m:
            return
        s = _SEQ_RE.search(pkt)
        seq = int(s.group(1)) if s else None
        if seq is not None and seq < self.min_seq:
            # A late receipt of an earlier phase must not count towards (or slow down) this one.
            self.stale += 1
            return
        self.received += 1
        if not self.first_recv:
            self.first_recv = now
        self.last_recv = now
        self.latencies.append(now - float(m.group(1)))
        if seq is not None:
            self.seq_counts[seq] = self.seq_counts.get(seq, 0) + 1

    # ---- commands from the parent -----------------------------------------------------------

    def _handle_command(self, msg: dict[str, Any]) -> None:
        cmd = msg["cmd"]
        if cmd == "open":
            self.opts = msg
            base = len(self.clients)
            self.pending_open = list(range(base, base + msg["n"]))
            self.open_base = base
            self.open_deadline = time.time() + msg["timeout"]
            self.open_reply_due = True
            self._pump_open()
        elif cmd == "reset":
            self.latencies, self.seq_counts = [], {}
            self.first_recv = self.last_recv = 0.0
            self.received = self.stale = 0
            self.min_seq = msg.get("min_seq", 0)
            self.pipe.send({"ok": True})
        elif cmd == "count":
            self.pipe.send({"received": self.received, "alive": self._alive(), "dropped": self._dropped()})
        elif cmd == "collect":
            self.pipe.send(
                {
                    "latencies": self.latencies,
                    "seq_counts": self.seq_counts,
                    "first_recv": self.first_recv,
                    "last_recv": self.last_recv,
                    "received": self.received,
                    "stale": self.stale,
                    "alive": self._alive(),
                    "dropped": self._dropped(),
                }
            )
        elif cmd == "close":
            dropped = self._dropped()
            self.close_times = []
            self._close_all(msg["timeout"])
            self.pipe.send({"dropped": dropped, "close_times": self.close_times, "unanswered": self.close_unanswered})
        elif cmd == "quit":
            self.running = False

    def _alive(self) -> int:
        return sum(1 for c in self.clients if c.state == READY)

    def _dropped(self) -> int:
        return sum(1 for c in self.clients if c.closed_by_server)

    def _in_flight(self) -> int:
        return sum(1 for c in self.clients[self.open_base :] if c.state not in (READY, CLOSED))

    def _pump_open(self) -> None:
        """Keep at most `concurrency` handshakes in flight, so the listen backlog is not flooded."""
        room = self.opts["concurrency"] - self._in_flight()
        while room > 0 and self.pending_open:
            self._start_connect(self.pending_open.pop(0))
            room -= 1

    def _maybe_finish_open(self) -> None:
        if not self.open_reply_due:
            return
        timed_out = time.time() >= self.open_deadline
        if not timed_out:
            self._pump_open()
            if self.pending_open or self._in_flight():
                return
        batch = self.clients[self.open_base :]
        for c in batch:
            if c.state not in (READY, CLOSED):
                self._fail(c, f"timeout in {STATE_NAMES[c.state]}")
        errors: dict[str, int] = {}
        for c in batch:
            if c.state != READY and c.error:
                errors[c.error] = errors.get(c.error, 0) + 1
        self.pipe.send(
            {
                "connected": sum(1 for c in batch if c.state == READY),
                "failed": sum(1 for c in batch if c.state != READY) + len(self.pending_open),
                "errors": errors,
                "connect_times": [c.connected_at - c.started for c in batch if c.state == READY],
            }
        )
        self.pending_open = []
        self.open_reply_due = False

    def _close_all(self, timeout: float) -> None:
        """Socket.IO disconnect, then a websocket close handshake, then TCP close."""
        for c in self.clients:
            if c.state == READY:
                self._send_text(c, "41")
                self._send(c, _frame(OP_CLOSE, struct.pack("!H", 1000)))
                c.state = CLOSING
                c.close_started = time.time()
        deadline = time.time() + timeout
        while time.time() < deadline and any(c.state == CLOSING for c in self.clients):
            for key, mask in self.sel.select(0.05):
                if key.data is not None:
                    self._on_io(key.data, mask)
        self.close_unanswered = 0
        for c in self.clients:
            if c.state != CLOSED:
                self.close_unanswered += c.state == CLOSING
                c.state = CLOSING
                self._fail(c, "closed")
        self.clients = []

    def _on_io(self, c: _Client, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and c.outbuf:
            self._flush(c)
        if mask & selectors.EVENT_READ and c.state != CLOSED:
            self._on_readable(c)

    def run(self) -> None:
        while self.running:
            for key, mask in self.sel.select(0.05):
                if key.data is None:
                    try:
                        msg = self.pipe.recv()
                    except EOFError:
                        self.running = False
                        break
                    self._handle_command(msg)
                else:
                    self._on_io(key.data, mask)
            self._maybe_finish_open()
        for c in self.clients:
            if c.state != CLOSED:
                c.sock.close()


def _worker_main(pipe: Connection) -> None:
    _Worker(pipe).run()


class LoadGen:
    """Parent-side handle on the worker processes; every call has a timeout."""

    def __init__(self, processes: int = 4) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def _ask_all(self, msg: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send(msg)
        return [self._reply(pipe, timeout) for pipe in self.pipes]

    @staticmethod
    def _reply(pipe: Connection, timeout: float) -> dict[str, Any]:
        if not pipe.poll(timeout):
            raise TimeoutError("load generator worker did not answer")
        return pipe.recv()

    def open(
        self,
        host: str,
        port: int | list[int],
        n: int,
        auth: dict[str, Any] | None = None,
        subscribe: str | None = None,
        timeout: float = 60.0,
        concurrency: int = 64,
    ) -> dict[str, Any]:
        """Open n more clients spread over the workers (and over the ports, if several); returns counts, errors and
        connect times."""
        shares = [n // len(self.pipes) + (1 if i < n % len(self.pipes) else 0) for i in range(len(self.pipes))]
        t0 = time.time()
        for pipe, share in zip(self.pipes, shares, strict=True):
            pipe.send(
                {
                    "cmd": "open",
                    "n": share,
                    "host": host,
                    "ports": port if isinstance(port, list) else [port],
                    "auth": auth,
                    "subscribe": subscribe,
                    "timeout": timeout,
                    "concurrency": max(1, concurrency // len(self.pipes)),
                }
            )
        replies = [self._reply(pipe, timeout + 10) for pipe in self.pipes]
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": errors,
            "connect_times": sorted(t for r in replies for t in r["connect_times"]),
            "wall": time.time() - t0,
        }

    def cpu_seconds(self) -> float:
        """utime + stime of the worker processes so far: the load generator's own CPU, to show next to the server's
        (read from /proc as bench/servers.py reads the servers')."""
        ticks = 0
        for proc in self.procs:
            try:
                stat = open(f"/proc/{proc.pid}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def reset(self, min_seq: int = 0) -> None:
        """Forget receipts; from now on ignore (count as stale) events numbered below min_seq."""
        self._ask_all({"cmd": "reset", "min_seq": min_seq}, 10)

    def count(self) -> dict[str, int]:
        replies = self._ask_all({"cmd": "count"}, 10)
        return {k: sum(r[k] for r in replies) for k in ("received", "alive", "dropped")}

    def collect(self) -> dict[str, Any]:
        replies = self._ask_all({"cmd": "collect"}, 30)
        seq_counts: dict[int, int] = {}
        for r in replies:
            for k, v in r["seq_counts"].items():
                seq_counts[k] = seq_counts.get(k, 0) + v
        firsts = [r["first_recv"] for r in replies if r["first_recv"]]
        return {
            "latencies": sorted(x for r in replies for x in r["latencies"]),
            "seq_counts": seq_counts,
            "first_recv": min(firsts) if firsts else 0.0,
            "last_recv": max(r["last_recv"] for r in replies),
            "received": sum(r["received"] for r in replies),
            "stale": sum(r["stale"] for r in replies),
            "alive": sum(r["alive"] for r in replies),
            "dropped": sum(r["dropped"] for r in replies),
        }

    def wait_received(self, expected: int, timeout: float, idle: float = 5.0) -> dict[str, int]:
        """Poll until `expected` events arrived, nothing new came for `idle` s, or `timeout`."""
        deadline = time.time() + timeout
        last, last_change = -1, time.time()
        counts = self.count()
        while time.time() < deadline:
            counts = self.count()
            if counts["received"] >= expected:
                break
            if counts["received"] != last:
                last, last_change = counts["received"], time.time()
            elif time.time() - last_change > idle:
                break
            time.sleep(0.05)
        return counts

    def close_clients(self, timeout: float = 10.0) -> dict[str, Any]:
        """Cleanly close every client: how many the server had dropped before, and how long each close took.

        A close counts as done when the server answers the websocket close frame or closes the TCP connection;
        clients still waiting at `timeout` are closed from our side and counted as `unanswered`.
        """
        t0 = time.time()
        # Generous margin: after `timeout` a worker still closes its remaining sockets, on a possibly busy machine.
        replies = self._ask_all({"cmd": "close", "timeout": timeout}, timeout + 60)
        return {
            "dropped": sum(r["dropped"] for r in replies),
            "close_times": sorted(t for r in replies for t in r["close_times"]),
            "unanswered": sum(r["unanswered"] for r in replies),
            "wall": time.time() - t0,
        }

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send({"cmd": "quit"})
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Open N Socket.IO websocket clients and hold them.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--token")
    parser.add_argument("--subscribe")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold the clients")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with LoadGen(args.processes) as lg:
        auth = {"token": args.token} if args.token else None
        res = lg.open(args.host, args.port, args.n, auth=auth, subscribe=args.subscribe)
        times = res.pop("connect_times")
        log.info("open: %s p50=%.1fms p99=%.1fms", res, percentile(times, 50) * 1e3, percentile(times, 99) * 1e3)
        deadline = time.time() + args.hold
        while time.time() < deadline:
            time.sleep(1)
            log.info("%s", lg.count())
        closed = lg.close_clients()
        times = closed.pop("close_times")
        log.info("closed: %s answered=%d p50=%.1fms", closed, len(times), percentile(times, 50) * 1e3)
