// Anchor: the reference Node.js Socket.IO server with the same endpoints as the Python anchor.
// Usage: node node_server.js <port> [host]
// With REDIS_URL set, several of these share one Redis through @socket.io/redis-adapter: an emit on one instance
// reaches the clients of every instance (the adapter's pub/sub), as socket.io documents for scaling out.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 3000);
const host = process.argv[3] || "127.0.0.1";

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/livez") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  if (req.method === "POST" && req.url === "/broadcast") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch (e) {
        res.writeHead(400, { "Content-Type": "application/json" });
        res.end('{"error":{"code":"bad_json","message":"body is not JSON"}}');
        return;
      }
      io.emit(body.event || "tick", body.data);
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"ok":true}');
    });
    return;
  }
  res.writeHead(404, { "Content-Type": "application/json" });
  res.end('{"error":{"code":"not_found","message":"not found"}}');
});

const io = new Server(server);
io.on("connection", (socket) => {
  socket.on("subscribe", (data, ack) => {
    socket.join(data.channel);
    if (typeof ack === "function") ack({ ok: true, channel: data.channel });
  });
});

async function useRedisAdapter(url) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) client.on("error", (err) => console.error(`ERROR redis: ${err}`));
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));
}

(process.env.REDIS_URL ? useRedisAdapter(process.env.REDIS_URL) : Promise.resolve()).then(
  () => {
    server.listen(port, host, () => {
      console.log(`listening on ${host}:${port}${process.env.REDIS_URL ? " (Redis adapter)" : ""}`);
    });
  },
  (err) => {
    console.error(`Redis adapter: ${err}`);
    process.exit(1);
  },
);
