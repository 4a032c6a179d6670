// Interop check run by tests/integration/test_hub_js_client.py: the official socket.io-client connects with a
// token, subscribes, receives, disconnects, recovers what it missed with `since`, and is left out of a publish that
// excludes its `socket.id`. Prints one JSON report; the Python test makes the assertions.
import { io } from "socket.io-client";

const [url, apiKey, channel] = process.argv.slice(2);
const ACK_TIMEOUT_MS = 5000;

setTimeout(() => {
  console.error("interop script timed out");
  process.exit(2);
}, 30000).unref();

async function api(path, body) {
  const response = await fetch(`${url}/api/v1${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

function connect(auth) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { auth, transports: ["websocket"], reconnection: false, timeout: ACK_TIMEOUT_MS });
    socket.on("connect", () => resolve(socket));
    socket.on("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

// Deliveries and acks go into one list in the order the client handled them (callbacks run synchronously).
function recorder(socket) {
  const log = [];
  socket.onAny((event, data, meta) => log.push({ kind: "event", event, data, meta }));
  const call = (event, payload) =>
    new Promise((resolve, reject) => {
      socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (err, ack) => {
        if (err) return reject(err);
        log.push({ kind: "ack", event, ack });
        resolve(ack);
      });
    });
  return { log, call };
}

async function until(predicate, what) {
  const deadline = Date.now() + 10000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const events = (log) => log.filter((entry) => entry.kind === "event");
const report = {};

try {
  await connect({ token: "not-a-token" });
  report.refusal = null;
} catch (err) {
  report.refusal = { message: err.message, data: err.data };
}

const issued = await api("/tokens", { sub: "js-client", channels: [channel], ttl: 120 });
const token = issued.body.token;

const first = await connect({ token });
const one = recorder(first);
report.firstAck = await one.call("subscribe", { channel });
for (let n = 0; n < 3; n++) await api("/publish", { channel, event: "tick", data: { n } });
await until(() => events(one.log).length === 3, "3 live messages");
report.firstLog = one.log;
first.disconnect();

for (let n = 3; n < 6; n++) await api("/publish", { channel, event: "tick", data: { n } });

const second = await connect({ token });
const two = recorder(second);
report.secondAck = await two.call("subscribe", { channel, since: 3, epoch: report.firstAck.epoch });
await api("/publish", { channel, event: "tick", data: { n: 6 } });
await until(() => events(two.log).length === 4, "3 recovered and 1 live message");
report.secondLog = [...two.log];

// Echo suppression: `socket.id` is the sid the HTTP publish's `exclude` names.
const seen = events(two.log).length;
report.excluded = await api("/publish", { channel, event: "tick", data: { n: "excluded" }, exclude: second.id });
await api("/publish", { channel, event: "tick", data: { n: "sentinel" } });
await until(() => events(two.log).some((entry) => entry.data?.n === "sentinel"), "the sentinel");
report.afterExclusion = events(two.log).slice(seen).map((entry) => entry.data);
second.disconnect();

console.log(JSON.stringify(report));
process.exit(0);
