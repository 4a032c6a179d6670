"""A reconnect storm: N subscribed clients, the server restarted under them (SIGTERM with drain, then started again),
every client back with the jittered `retry_after_ms` the drain sent and its missed messages recovered with `since`.

    .venv/bin/python bench/reconnect_storm.py                        # 2000 clients, Signalboard then Node, 1 round
    .venv/bin/python bench/reconnect_storm.py --clients 500 --servers signalboard

Signalboard runs with REDIS_URL (a redis-server of its own): the history a `since` recovery reads must outlive the
process, as in production; one instance on a fixed port, restarted on the same port as soon as the old one exited
(`--restart port-free`: as soon as it stopped listening, which Signalboard's drain does after its notice; the old one
then finishes its drain beside the new one).
A publisher POSTs one numbered message every `--interval` s from before the SIGTERM until after every client is
back, retrying each number (same idempotency key) until it is accepted. Each client:
- on `signalboard:reconnect` remembers `retry_after_ms`; when its session ends it reconnects after that delay (or,
  with no hint, after socket.io-client's default backoff: 1 s +-50 %, doubling, at most 5 s); a refused handshake
  waits its Retry-After, a refused TCP connect (nothing listening yet) the backoff;
- subscribes again with `since` (the last offset it saw) and the `epoch` of its previous ack; a subscribe refused
  `unavailable` with a `retry_after` is sent again on the same connection after it (+-50 %), any other refusal ends
  the session.
Reported: time from the SIGTERM until every client was subscribed again (p50/p99 of each client's own gap), messages
lost (numbers published that a client never got, counted once nothing more arrived for 5 s: late is not lost) and
duplicated, `recovered: false` acks, handshake answers by
status, 5xx answers to the publisher, the server's peak RSS (old and new process), the server's and the load
generator's CPU. Node (bench/anchors/node_server.js, no drain and no history) gets the same clients after a plain
SIGTERM and restart: its reconnect time is comparable, its losses are not (it keeps nothing to recover from).
Results go to docs/perf-reconnect.{json,md}.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import logging
import multiprocessing
import os
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run  # noqa: E402
import servers  # noqa: E402
from loadgen import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, _frame, percentile  # noqa: E402

from tests.scale.processes import RedisProcess  # noqa: E402

log = logging.getLogger("bench.reconnect_storm")

PATH = "/socket.io/?EIO=4&transport=websocket"
RECONNECT_EVENT = "signalboard:reconnect"
_SEQ = re.compile(rb'"bench_seq":\s*([0-9]+)')
_OFFSET = re.compile(rb'"offset":\s*([0-9]+)')
_HINT = re.compile(rb'"retry_after_ms":\s*([0-9]+)')
_REASON = re.compile(rb'"reason":\s*"([a-z_]+)"')
_LENGTH = re.compile(rb"\r\ncontent-length:\s*([0-9]+)", re.IGNORECASE)
_RETRY_AFTER = re.compile(rb"\r\nretry-after:\s*([0-9]+)", re.IGNORECASE)

DOWN, HANDSHAKE, EIO_OPEN, SIO_CONNECT, SUBSCRIBING, READY, RESUBSCRIBE = range(7)


@dataclass
class Client:
    index: int
    state: int = DOWN
    sock: socket.socket | None = None
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    next_try: float = 0.0
    attempt: int = 0  # failed tries since the last session, for the backoff
    hint_ms: int | None = None  # retry_after_ms of the last signalboard:reconnect
    offset: int | None = None
    epoch: Any = None
    sessions: int = 0  # subscribed sessions so far
    lost_at: float = 0.0  # when the current outage began (0: none)
    gaps: list[float] = field(default_factory=list)
    seqs: dict[int, int] = field(default_factory=dict)  # bench_seq -> times received
    hints: int = 0


class Worker:
    """One process's selector loop over its share of the clients; they reconnect on their own."""

    def __init__(self, pipe: Connection, opts: dict[str, Any], indices: range) -> None:
        self.pipe, self.opts = pipe, opts
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe.fileno(), selectors.EVENT_READ, None)
        self.clients = [Client(i) for i in indices]
        self.counts: dict[str, int] = {}
        self.rng = random.Random(os.getpid())
        self.running = True

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    # ---- connection plumbing -------------------------------------------------------------------------------

    def connect(self, c: Client) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.opts["port"]))
        if err not in (0, 115, 11):
            sock.close()
            self.count(f"connect errno {err}")
            self.retry_later(c, None)
            return
        c.sock, c.state = sock, HANDSHAKE
        c.inbuf.clear()
        key = base64.b64encode(os.urandom(16)).decode()
        c.outbuf[:] = (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.opts['port']}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                       ).encode()
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def send(self, c: Client, text: str) -> None:
        if c.sock is None:
            return
        data = _frame(OP_TEXT, text.encode())
        if not c.outbuf:
            try:
                sent = c.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.lost(c, "send error")
                return
            data = data[sent:]
            if not data:
                return
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        c.outbuf += data

    def flush(self, c: Client) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(c.outbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            # A connect to a port nobody listens on yet fails here (ECONNREFUSED).
            self.lost(c, f"connect {exc.__class__.__name__}" if c.state == HANDSHAKE else "send error")
            return
        del c.outbuf[:sent]
        if not c.outbuf:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def lost(self, c: Client, reason: str, retry_after: float | None = None) -> None:
        """The connection is gone: close it and plan the next try."""
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.sock = None
        was_ready = c.state == READY
        c.state = DOWN
        c.outbuf.clear()
        self.count(reason)
        if was_ready and not c.lost_at:
            c.lost_at = time.time()
        self.retry_later(c, retry_after)

    def retry_later(self, c: Client, retry_after: float | None) -> None:
        if retry_after is None and c.hint_ms is not None:
            retry_after, c.hint_ms = c.hint_ms / 1000, None  # the drain's hint, once
        if retry_after is None:
            # socket.io-client's default: reconnectionDelay 1 s, randomizationFactor 0.5, doubling, at most 5 s.
            base = min(5.0, 1.0 * 2 ** c.attempt)
            retry_after = base * (1 + self.rng.uniform(-0.5, 0.5))
        c.attempt += 1
        c.state = DOWN
        c.next_try = time.time() + retry_after

    # ---- protocol ---------------------------------------------------------------------------------------------

    def readable(self, c: Client) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(c, f"recv {exc.__class__.__name__}")
            return
        if not data:
            self.lost(c, "eof")
            return
        c.inbuf += data
        if c.state == HANDSHAKE:
            end = c.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(c.inbuf[:end + 2])
            status = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 1 else "?"
            length = _LENGTH.search(head)
            if status != "101" and length and len(c.inbuf) < end + 4 + int(length.group(1)):
                return  # a refusal's body (its reason) may come in the next read
            reason = _REASON.search(c.inbuf, end)  # a refusal's JSON body names its reason (draining, capacity)
            self.count(f"http {status}" + (f" {reason.group(1).decode()}" if reason and status != "101" else ""))
            if status != "101":
                match = _RETRY_AFTER.search(head)
                self.lost(c, "refused", float(match.group(1)) if match else None)
                return
            del c.inbuf[:end + 4]
            c.state = EIO_OPEN
        self.frames(c)

    def frames(self, c: Client) -> None:
        buf, pos = c.inbuf, 0
        while c.sock is not None and len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            if opcode == OP_PING:
                c.outbuf += _frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.lost(c, "websocket close")
                return
            elif opcode in (OP_TEXT, OP_CONT):
                self.packet(c, payload)
        if c.sock is not None:
            del buf[:pos]

    def packet(self, c: Client, pkt: bytes) -> None:
        kind = pkt[:1]
        if kind == b"2":
            self.send(c, "3")
        elif kind == b"0" and c.state == EIO_OPEN:
            c.state = SIO_CONNECT
            auth = self.opts.get("auth")
            self.send(c, "40" + (json.dumps(auth) if auth is not None else ""))
        elif kind == b"1":
            self.lost(c, "engine.io close")
        elif kind == b"4":
            sio = pkt[1:2]
            if sio == b"2":
                self.event(c, pkt)
            elif sio == b"0" and c.state == SIO_CONNECT:
                self.subscribe(c)
            elif sio == b"3" and c.state == SUBSCRIBING:
                self.ack(c, pkt)
            elif sio == b"4":
                self.lost(c, "connect_error")
            elif sio == b"1":
                self.lost(c, "socket.io disconnect")

    def subscribe(self, c: Client) -> None:
        c.state = SUBSCRIBING
        sub: dict[str, Any] = {"channel": self.opts["channel"]}
        if c.offset is not None and self.opts["recover"]:
            sub |= {"since": c.offset, "epoch": c.epoch}
        self.send(c, "421" + json.dumps(["subscribe", sub]))

    def ack(self, c: Client, pkt: bytes) -> None:
        try:
            answer = json.loads(pkt[pkt.find(b"["):])[0]
        except (ValueError, IndexError):
            self.lost(c, "bad ack")
            return
        if not answer.get("ok"):
            error = answer.get("error", {})
            if error.get("code") == "unavailable" and isinstance(error.get("retry_after"), (int, float)):
                self.count("subscribe unavailable, retried")
                c.state = RESUBSCRIBE
                c.next_try = time.time() + error["retry_after"] * (1 + self.rng.uniform(-0.5, 0.5))
                return
            self.lost(c, f"subscribe refused {error.get('code')}")
            return
        if c.sessions and answer.get("recovered") is False and self.opts["recover"]:
            self.count("recovered false")
        c.epoch = answer.get("epoch", c.epoch)
        if c.offset is None and isinstance(answer.get("offset"), int):
            c.offset = answer["offset"]
        c.state, c.attempt = READY, 0
        c.sessions += 1
        if c.lost_at:
            c.gaps.append(time.time() - c.lost_at)
            c.lost_at = 0.0

    def event(self, c: Client, pkt: bytes) -> None:
        if pkt[4:4 + len(RECONNECT_EVENT)] == RECONNECT_EVENT.encode():
            hint = _HINT.search(pkt)
            c.hint_ms = int(hint.group(1)) if hint else None
            c.hints += 1
            if not c.lost_at:
                c.lost_at = time.time()
            return
        seq = _SEQ.search(pkt)
        if seq is not None:
            n = int(seq.group(1))
            c.seqs[n] = c.seqs.get(n, 0) + 1
        offset = _OFFSET.search(pkt)
        if offset is not None:
            c.offset = max(c.offset or 0, int(offset.group(1)))

    # ---- the loop ------------------------------------------------------------------------------------------------

    def summary(self, published: int) -> dict[str, Any]:
        lost = duplicated = 0
        missing: dict[int, int] = {}  # seq -> clients that never got it
        for c in self.clients:
            for n in range(published):
                if n not in c.seqs:
                    lost += 1
                    missing[n] = missing.get(n, 0) + 1
            duplicated += sum(times - 1 for times in c.seqs.values())
        return {"ready": sum(c.state == READY for c in self.clients),
                "back": sum(c.state == READY and c.sessions >= 2 for c in self.clients),
                "subscribed_once": sum(c.sessions >= 1 for c in self.clients),
                "gaps": [g for c in self.clients for g in c.gaps], "lost": lost, "duplicated": duplicated,
                "hints": sum(c.hints for c in self.clients), "counts": self.counts, "missing": missing}

    def run(self) -> None:
        while self.running:
            now = time.time()
            for c in self.clients:
                if c.state == DOWN and c.next_try <= now:
                    self.connect(c)
                elif c.state == RESUBSCRIBE and c.next_try <= now:
                    self.subscribe(c)
            for key, mask in self.sel.select(0.02):
                if key.data is None:
                    msg = self.pipe.recv()
                    if msg["cmd"] == "status":
                        self.pipe.send({"ready": sum(c.state == READY for c in self.clients),
                                        "back": sum(c.state == READY and c.sessions >= 2 for c in self.clients)})
                    elif msg["cmd"] == "summary":
                        self.pipe.send(self.summary(msg["published"]))
                    elif msg["cmd"] == "quit":
                        self.running = False
                    continue
                c = key.data
                if mask & selectors.EVENT_WRITE and c.outbuf:
                    self.flush(c)
                if mask & selectors.EVENT_READ and c.sock is not None:
                    self.readable(c)
                if c.sock is not None and c.outbuf:
                    try:
                        self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                    except (KeyError, ValueError):
                        pass
        for c in self.clients:
            if c.sock is not None:
                c.sock.close()


def _worker_main(pipe: Connection, opts: dict[str, Any], indices: range) -> None:
    Worker(pipe, opts, indices).run()


class Clients:
    """The worker processes; each client starts connecting at once."""

    def __init__(self, clients: int, processes: int, opts: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for p in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, opts, range(p, clients, processes)), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def ask(self, msg: dict[str, Any], timeout: float = 30) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send(msg)
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError("a client worker did not answer")
            replies.append(pipe.recv())
        return replies

    def status(self) -> dict[str, int]:
        replies = self.ask({"cmd": "status"})
        return {k: sum(r[k] for r in replies) for k in ("ready", "back")}

    def wait(self, key: str, n: int, timeout: float) -> float | None:
        """Seconds until `key` reached n, or None at the timeout."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.status()[key] >= n:
                return time.time() - t0
            time.sleep(0.05)
        return None

    def cpu_seconds(self) -> float:
        ticks = 0
        for proc in self.procs:
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / servers.CLK_TCK

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send({"cmd": "quit"})
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # by its PID
                proc.join(5)


class Publisher(threading.Thread):
    """One numbered message every `interval` s; each number retried (same idempotency key) until accepted."""

    def __init__(self, server: servers.Server, interval: float) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.published = 0
        self.statuses: dict[str, int] = {}
        self.stopping = threading.Event()

    def body(self, seq: int) -> dict[str, Any]:
        data = {"bench_seq": seq, "bench_ts": time.time()}
        if self.server.kind == "signalboard":
            return {"channel": servers.BENCH_CHANNEL, "event": "tick", "data": data,
                    "idempotency_key": f"reconnect-storm-{seq}"}
        return {"event": "tick", "data": data}

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                status, _ = servers.http_request(self.server.port, "POST", self.server.publish_path,
                                                 self.body(self.published), self.server.publish_headers, timeout=10)
                key = str(status)
            except OSError as exc:
                status, key = 0, exc.__class__.__name__
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if 200 <= status < 300:
                self.published += 1
                self.stopping.wait(self.interval)
            else:
                self.stopping.wait(0.05)  # down or refusing: the same number again

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)


class ServerWatch(threading.Thread):
    """The server processes' peak RSS (summed over those alive: old and new overlap with `--restart port-free`) and
    their CPU, sampled every 0.1 s: a process tree's CPU can be read only while it lives, so its highest sample is
    what it spent."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib = 0
        self._cpu: dict[int, float] = {}  # pid -> its last CPU sample
        self._base: dict[int, float] = {}  # pid -> its CPU when counting began (mark)
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def add(self, pid: int) -> None:
        with self._lock:
            self._cpu[pid] = self._base[pid] = servers.tree_cpu_seconds(pid)

    def mark(self) -> None:
        """Count CPU from now on."""
        self._sample()
        with self._lock:
            self._base = dict(self._cpu)

    def cpu_since_mark(self) -> float:
        self._sample()
        with self._lock:
            return sum(cpu - self._base[pid] for pid, cpu in self._cpu.items())

    def _sample(self) -> None:
        with self._lock:
            pids = list(self._cpu)
        rss = 0
        for pid in pids:
            cpu = servers.tree_cpu_seconds(pid)  # of the tree: it falls when the worker exits before the master
            with self._lock:
                self._cpu[pid] = max(self._cpu[pid], cpu)
            rss += servers.tree_status(pid)["rss_kib"]
        self.peak_kib = max(self.peak_kib, rss)

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            self._sample()


def stopped_listening(port: int, timeout: float) -> bool:
    """Wait until nothing accepts connections on `port` (the old server closed its listener)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass  # a full backlog (timeout): still listening
        time.sleep(0.05)
    return False


def start(name: str, port: int, redis_url: str | None) -> servers.Server:
    """`name` on `port` (the same one again after the restart)."""
    if name == "node":
        return servers.start_node(port)
    env = {"LOG_LEVEL": "WARNING", "PORT": str(port), "REDIS_KEY_PREFIX": f"bench{os.getpid()}"}
    return servers.start_signalboard(env | ({"REDIS_URL": redis_url} if redis_url else {}))


def summed(replies: list[dict[str, Any]], key: str) -> dict[Any, int]:
    """The client workers' `key` counts, added up."""
    total: collections.Counter[Any] = collections.Counter()
    for reply in replies:
        total.update(reply[key])
    return dict(total)


def wait_exit(server: servers.Server, out: dict[str, Any], t0: float) -> None:
    try:
        server.proc.wait(60)
    except subprocess.TimeoutExpired:
        log.warning("%s did not exit within 60 s of SIGTERM", server.name)
    out["old_exit_s"] = time.time() - t0


def storm(name: str, clients: int, processes: int, interval: float, timeout: float, restart: str) -> dict[str, Any]:
    redis = RedisProcess(durable=False).start() if name == "signalboard" else None
    port = servers.free_port()
    server = start(name, port, redis.url if redis else None)
    out: dict[str, Any] = {"server": name, "clients": clients, "restart": restart}
    watch = ServerWatch()
    watch.add(server.pid)
    watch.start()
    opts = {"port": port, "auth": server.auth, "channel": servers.BENCH_CHANNEL, "recover": name == "signalboard"}
    fleet = Clients(clients, processes, opts)
    publisher = Publisher(server, interval)
    try:
        held = fleet.wait("ready", clients, timeout)
        if held is None:
            events = summed(fleet.ask({"cmd": "summary", "published": 0}), "counts")
            raise RuntimeError(f"only {fleet.status()['ready']} of {clients} clients connected; client events "
                               f"{json.dumps(events, sort_keys=True)}; server log: {problems(server)[:5]}")
        out["connect_s"] = held
        publisher.start()
        time.sleep(2.0)
        watch.mark()
        lg0 = fleet.cpu_seconds()
        t0 = time.time()
        old = server
        old.proc.send_signal(15)  # SIGTERM to gunicorn's master (or node): the drain, where there is one
        if stopped_listening(port, 60):
            out["old_stopped_listening_s"] = time.time() - t0
        if restart == "exit":
            wait_exit(old, out, t0)
        server = start(name, port, redis.url if redis else None)
        watch.add(server.pid)
        out["new_ready_s"] = time.time() - t0
        if restart == "port-free":
            wait_exit(old, out, t0)  # it finishes its drain beside the new one
        out["old_log"] = problems(old)
        old.stop()  # by PID: nothing is left of it
        back = fleet.wait("back", clients, timeout)
        out["all_back_s"] = (time.time() - t0) if back is not None else None
        out["back"] = fleet.status()["back"]
        time.sleep(2.0)  # messages published after the last one came back
        publisher.stop()
        # Late is not lost: wait until every published number arrived, or nothing more arrives for 5 s.
        t_stop, last, last_change = time.time(), None, time.time()
        while True:
            replies = fleet.ask({"cmd": "summary", "published": publisher.published}, 60)
            lost = sum(r["lost"] for r in replies)
            if lost != last:
                last, last_change = lost, time.time()
            if lost == 0 or time.time() - last_change > 5 or time.time() - t_stop > 60:
                break
            time.sleep(0.5)
        out["settle_s"] = time.time() - t_stop
        out["server_cpu_s"] = watch.cpu_since_mark()
        out["loadgen_cpu_s"] = fleet.cpu_seconds() - lg0
        gaps = sorted(g for r in replies for g in r["gaps"])
        counts = summed(replies, "counts")
        statuses = publisher.statuses
        missing = summed(replies, "missing")
        out["missing_seqs"] = _ranges(sorted(missing)), max(missing.values(), default=0)
        out["new_log"] = problems(server)
        out |= {"published": publisher.published, "lost": sum(r["lost"] for r in replies),
                "duplicated": sum(r["duplicated"] for r in replies), "hints": sum(r["hints"] for r in replies),
                "gap_p50_s": percentile(gaps, 50), "gap_p99_s": percentile(gaps, 99),
                "handshake_5xx": sum(v for k, v in counts.items() if k.startswith("http 5")),
                "publish_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
                "recovered_false": counts.get("recovered false", 0), "peak_rss_mib": watch.peak_kib / 1024,
                "events": counts, "publisher": statuses}
    finally:
        publisher.stopping.set()
        watch.stopping.set()
        fleet.stop()
        server.stop()
        if redis is not None:
            redis.close()
    return out


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7"."""
    parts: list[str] = []
    for n in numbers:
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = parts[-1].split("-")[0] + f"-{n}"
        else:
            parts.append(str(n))
    return ",".join(parts)


LOGS: Path | None = None  # --logs: where each server's whole log is copied before its directory is removed


def problems(server: servers.Server) -> list[str]:
    """The server log's WARNING/ERROR lines (at most 10), kept before the server's directory is removed."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return []
    if LOGS is not None:
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / f"{server.name}-{server.pid}.log").write_text(text)
    lines = text.splitlines()
    return [line[:300] for line in lines if "WARNING" in line or "ERROR" in line or "Traceback" in line][:10]


FIGURES = ("all_back_s", "gap_p50_s", "gap_p99_s", "old_stopped_listening_s", "old_exit_s", "new_ready_s",
           "settle_s", "lost", "duplicated", "recovered_false", "handshake_5xx", "publish_5xx", "peak_rss_mib",
           "server_cpu_s", "loadgen_cpu_s", "published", "back")


def write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run._json_safe(report), indent=1) + "\n")
    names = list(report["runs"])
    lines = [f"# Reconnect storm: {report['clients']} clients, server restarted under them "
             f"({report['machine']['date_utc']}, commit {report['machine']['signalboard_commit']})", "",
             "Last round of each server; `lost` and `recovered_false` only mean something where a history exists "
             "(Signalboard with Redis), Node keeps none.", "",
             "| figure | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for figure in FIGURES:
        cells = [run._fmt(report["runs"][n][-1].get(figure)) if report["runs"][n] else "" for n in names]
        lines.append(f"| {figure} | " + " | ".join(cells) + " |")
    for n in names:
        if report["runs"][n]:
            last = report["runs"][n][-1]
            lines += ["", f"{n}: handshake answers and client events {json.dumps(last['events'], sort_keys=True)}; "
                      f"publisher answers {json.dumps(last['publisher'], sort_keys=True)}"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between published messages")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--servers", default="signalboard,node")
    parser.add_argument("--restart", choices=("exit", "port-free"), default="exit",
                        help="start the new server once the old one exited, or once it stopped listening (it "
                        "then finishes its drain beside the new one)")
    parser.add_argument("--out", default=str(servers.REPO_DIR / "docs" / "perf-reconnect"))
    parser.add_argument("--logs", type=Path, help="copy each server's whole log into this directory")
    args = parser.parse_args()
    global LOGS
    LOGS = args.logs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = args.servers.split(",")
    report: dict[str, Any] = {"machine": run.machine_info(), "clients": args.clients, "runs": {n: [] for n in names}}
    for rep in range(args.reps):
        for name in names:
            result = storm(name, args.clients, args.processes, args.interval, args.timeout, args.restart)
            log.info("%s round %d: %s", name, rep + 1, json.dumps(result, default=str))
            report["runs"][name].append(result)
            write(report, Path(args.out))


if __name__ == "__main__":
    main()
