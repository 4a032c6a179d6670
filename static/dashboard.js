// Signalboard dashboard: one Socket.IO connection to /dashboard, rendering the server's snapshots and events.
// Everything untrusted is written with textContent, never as HTML. Rendering is batched per animation frame and
// every list is capped, so a busy server cannot grow the DOM without bound.
(function () {
  "use strict";

  const HISTORY_POINTS = 600; // 10 minutes of one-second samples
  const MAX_EVENT_ROWS = 300; // events kept in the DOM
  const MAX_PENDING_EVENTS = 1000; // events waiting for the next frame (older ones are dropped first)
  const NAME_RE = /^[A-Za-z0-9_.:-]+$/;
  const RACE_KINDS = ["unknown_session", "closed_session", "request_race", "handler", "decorator", "library",
    "send_to_closed", "thread", "connect_race"];

  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  // ---------- small helpers ----------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function setText(id, value) {
    const node = $(id);
    const text = value === null || value === undefined ? "–" : String(value);
    if (node.textContent !== text) node.textContent = text;
  }
  function fmtRate(value) { return value === null || value === undefined ? "–" : value.toFixed(1); }
  function fmtCompact(value) {
    if (Math.abs(value) >= 1e6) return +(value / 1e6).toFixed(1) + "M";
    if (Math.abs(value) >= 1e3) return +(value / 1e3).toFixed(1) + "k";
    return String(+value.toFixed(2));
  }
  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return "–";
    const mb = bytes / (1024 * 1024);
    return mb >= 1024 ? (mb / 1024).toFixed(2) + " GiB" : mb.toFixed(1) + " MiB";
  }
  function fmtDuration(seconds) {
    seconds = Math.floor(seconds);
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function fmtTime(epochSeconds) {
    if (!epochSeconds) return "–";
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }
  function nameProblem(kind, value) {
    if (!value) return kind + " is required";
    if (value.length > (kind === "channel" ? 128 : 64)) return kind + " is too long";
    if (!NAME_RE.test(value)) return kind + " may only contain letters, digits and _ . : -";
    if (kind === "channel" && value.split(".").includes("")) return "channel segments separated by '.' must not be empty";
    return "";
  }

  // Redraw a table body (a hint row when empty). Focus stays on the same row's button across the once-a-second
  // redraw, found again by its data-<key>, so keyboard users are not thrown out.
  function replaceRows(body, rows, emptyText, columns, key) {
    if (!rows.length) {
      const row = el("tr");
      const cell = el("td", "hint", emptyText);
      cell.colSpan = columns;
      row.append(cell);
      rows.push(row);
    }
    const active = document.activeElement;
    const focused = active && body.contains(active) ? active.dataset[key] : null;
    body.replaceChildren.apply(body, rows);
    if (focused) {
      const again = body.querySelector("button[data-" + key + '="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
  }

  // ---------- connection ----------
  const socket = io("/dashboard", { auth: { csrf: csrf }, reconnectionDelayMax: 3000 });
  const stateNode = $("connection-state");
  function showState(kind, text) {
    stateNode.className = "state state-" + kind;
    stateNode.textContent = text;
    stateNode.dataset.state = kind;
  }
  socket.on("connect", function () {
    showState("connected", "live");
    sendWatch(); // the server forgets watches and filters with the connection; a reconnect restores them
    if ($("client-filter").value.trim()) sendClientFilter();
  });
  socket.on("disconnect", function (reason) {
    showState("connecting", "reconnecting…");
    if (reason === "io server disconnect") {
      // The server ended the session on purpose (a logout, a shutdown) and the client will not retry by itself:
      // try once more; if the login has gone, connect_error sends the page to the login form.
      setTimeout(function () { socket.connect(); }, 1000);
    }
  });
  socket.on("connect_error", function (err) {
    if (err && err.message === "unauthorized") {
      showState("disconnected", "session expired");
      window.location.assign("/login");
      return;
    }
    showState("disconnected", "offline, retrying…");
  });
  socket.io.on("reconnect_attempt", function (attempt) { showState("connecting", "reconnecting (" + attempt + ")…"); });

  // ---------- charts ----------
  const series = { t: [], websocket: [], polling: [], published: [], delivered: [] };
  let clientChart = null, rateChart = null;
  function chartSize(container) { return { width: Math.max(container.clientWidth, 200), height: 220 }; }
  function makeChart(containerId, lines) {
    const container = $(containerId);
    const opts = Object.assign(chartSize(container), {
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [
        { stroke: "#94a3b8", grid: { stroke: "#1e293b" }, ticks: { stroke: "#1e293b" } },
        { stroke: "#94a3b8", grid: { stroke: "#1e293b" }, ticks: { stroke: "#1e293b" }, size: 48,
          values: function (u, ticks) { return ticks.map(fmtCompact); } },
      ],
      series: [{}].concat(lines.map(function (line) {
        return { label: line.label, stroke: line.color, width: 2, fill: line.fill, points: { show: false } };
      })),
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    });
    const chart = new uPlot(opts, [[]].concat(lines.map(function () { return []; })), container);
    new ResizeObserver(function () { chart.setSize(chartSize(container)); }).observe(container);
    return chart;
  }
  function initCharts() {
    clientChart = makeChart("chart-clients", [
      { label: "websocket", color: "#38bdf8", fill: "rgba(56,189,248,0.12)" },
      { label: "polling", color: "#fbbf24", fill: "rgba(251,191,36,0.10)" },
    ]);
    rateChart = makeChart("chart-rate", [
      { label: "published/s", color: "#c084fc", fill: "rgba(192,132,252,0.12)" },
      { label: "delivered/s", color: "#4ade80", fill: "rgba(74,222,128,0.08)" },
    ]);
  }
  function pushSample(snap) {
    const last = series.t[series.t.length - 1];
    if (last !== undefined && snap.time - last > 3) {
      // Samples missed (disconnected, or a restart): a null point breaks the line instead of bridging the gap.
      series.t.push(last + 1);
      for (const key of ["websocket", "polling", "published", "delivered"]) series[key].push(null);
    }
    series.t.push(snap.time);
    series.websocket.push(snap.clients.websocket);
    series.polling.push(snap.clients.polling);
    series.published.push(snap.published_per_second);
    series.delivered.push(snap.delivered_per_second);
    while (series.t.length > HISTORY_POINTS) {
      for (const key of Object.keys(series)) series[key].shift();
    }
  }

  // ---------- snapshot panels ----------
  let lastSnapshot = null;
  // Snapshots are recorded as they come but drawn once per animation frame: a page that fell behind (a busy
  // machine, a hidden tab) catches up with one redraw, not one per second it missed.
  let snapshotFrame = false;
  function onSnapshot(snap) {
    pushSample(snap);
    lastSnapshot = snap;
    if (snapshotFrame) return;
    snapshotFrame = true;
    requestAnimationFrame(function () {
      snapshotFrame = false;
      renderSnapshot(lastSnapshot);
    });
  }

  function renderSnapshot(snap) {
    takeControlEvents(snap);
    setText("version", snap.version);
    setText("instance", snap.instance);
    setText("uptime", fmtDuration(snap.uptime));
    setText("clients-total", snap.clients.total);
    setText("clients-websocket", snap.clients.websocket);
    setText("clients-polling", snap.clients.polling);
    setText("dashboards", snap.clients.dashboards);
    setText("connects-per-minute", snap.connects_per_minute);
    setText("disconnects-per-minute", snap.disconnects_per_minute);
    setText("published-per-second", fmtRate(snap.published_per_second));
    setText("delivered-per-second", fmtRate(snap.delivered_per_second));
    setText("fanout-pending", snap.fanout.pending);
    setText("fanout-failed", snap.fanout.failed);
    setText("publish-refused", snap.fanout.refused);
    renderWebhooks(snap.webhooks || []);
    setText("threads-total", snap.threads.total);
    setText("threads-pool", snap.threads.pool);
    setText("threads-other", snap.threads.other);
    setText("memory", fmtBytes(snap.rss_bytes));
    renderRaces(snap.disconnect_races);
    renderChannels(snap.channels, snap.channel_count);
    renderClients();
    clientChart.setData([series.t, series.websocket, series.polling]);
    rateChart.setData([series.t, series.published, series.delivered]);
  }

  function renderWebhooks(receivers) {
    if (!receivers.length) {
      setText("webhooks-depth", "off");
      setText("webhooks-detail", "no WEBHOOK_URLS");
      return;
    }
    setText("webhooks-depth", receivers.reduce((sum, r) => sum + r.depth, 0));
    const oldest = Math.max(...receivers.map((r) => r.oldest_age));
    const delivered = receivers.reduce((sum, r) => sum + r.delivered, 0);
    const failing = receivers.find((r) => r.last_error);
    const error = failing ? ` · last error (${failing.url}): ${failing.last_error.detail}` : "";
    setText("webhooks-detail", `oldest ${fmtDuration(oldest)} · delivered ${delivered}${error}`);
  }

  function renderRaces(races) {
    const body = $("races");
    let total = 0;
    if (!body.children.length) {
      for (const kind of RACE_KINDS) {
        const row = el("tr");
        row.append(el("th", null, kind.replace(/_/g, " ")), el("td"));
        row.firstChild.scope = "row";
        row.dataset.kind = kind;
        body.append(row);
      }
    }
    for (const row of body.children) {
      const value = races[row.dataset.kind] || 0;
      total += value;
      const cell = row.lastChild;
      cell.textContent = String(value);
      cell.classList.toggle("nonzero", value > 0);
    }
    setText("races-total", total);
  }

  // What each table was last drawn from: a snapshot that changes nothing in it costs no DOM work.
  const drawn = { channels: null, clients: null };

  function renderChannels(channels, count) {
    setText("channel-count", count > channels.length ? channels.length + " of " + count : count);
    const key = JSON.stringify([channels, watched]);
    if (key === drawn.channels) return;
    drawn.channels = key;
    const body = $("channels");
    const rows = [];
    for (const ch of channels) {
      const row = el("tr");
      row.append(el("td", null, ch.channel), el("td", null, ch.subscribers), el("td", null, ch.offset));
      const cell = el("td");
      const watching = watched.includes(ch.channel);
      const button = el("button", "small", watching ? "Unwatch" : "Watch");
      button.type = "button";
      button.setAttribute("aria-pressed", String(watching));
      button.setAttribute("aria-label", (watching ? "Stop watching " : "Watch ") + ch.channel);
      button.dataset.channel = ch.channel;
      cell.append(button);
      row.append(cell);
      rows.push(row);
    }
    replaceRows(body, rows, "No channels yet.", 4, "channel");
  }
  $("channels").addEventListener("click", function (event) {
    const button = event.target.closest("button[data-channel]");
    if (!button) return;
    const channel = button.dataset.channel;
    setWatched(watched.includes(channel) ? watched.filter(function (c) { return c !== channel; }) : watched.concat([channel]));
  });

  function renderClients() {
    if (!lastSnapshot) return;
    const snap = lastSnapshot;
    const filter = $("client-filter").value.trim().toLowerCase();
    const key = JSON.stringify([snap.client_rows, snap.client_count, snap.client_matches, filter]);
    if (key === drawn.clients) return;
    drawn.clients = key;
    const body = $("clients");
    const rows = [];
    for (const client of snap.client_rows) {
      const text = [client.sid, client.sub || "", client.transport, client.channels.join(" "),
        client.joined === false ? "unjoined" : ""].join(" ").toLowerCase();
      if (filter && !text.includes(filter)) continue;
      const row = el("tr");
      const who = client.joined === false ? "no namespace joined" : client.sub || (snap.subs_known ? "anonymous" : "–");
      row.append(el("td", null, client.sid), el("td", null, who),
        el("td", null, client.transport),
        el("td", "channels", client.channels.join(", ") || "–"), el("td", null, fmtTime(client.since)));
      const cell = el("td", "actions");
      const button = el("button", "small danger", "Disconnect");
      button.type = "button";
      button.dataset.sid = client.sid;
      button.setAttribute("aria-label", "Disconnect client " + client.sid);
      cell.append(button);
      if (client.sub) {
        // Every connection of this user, on every instance (POST /api/v1/users/<sub>/disconnect).
        const all = el("button", "small danger", "Disconnect user");
        all.type = "button";
        all.dataset.sub = client.sub;
        all.setAttribute("aria-label", "Disconnect every connection of user " + client.sub);
        cell.append(all);
      }
      row.append(cell);
      rows.push(row);
    }
    let shown = String(snap.client_count);
    if (snap.client_matches !== snap.client_count) shown = snap.client_matches + " of " + snap.client_count + " match";
    if (snap.client_matches > snap.client_rows.length) shown += ", newest " + snap.client_rows.length + " shown";
    setText("client-count", shown);
    replaceRows(body, rows, snap.client_count ? "No client matches the filter." : "No realtime clients connected.", 6,
      "sid");
  }
  // Filtered here at once, and by the server from the next snapshot on (it sends at most 200 rows).
  let filterTimer = null;
  function sendClientFilter() {
    if (socket.connected) socket.emit("filter_clients", { text: $("client-filter").value.trim() });
  }
  $("client-filter").addEventListener("input", function () {
    renderClients();
    clearTimeout(filterTimer);
    filterTimer = setTimeout(sendClientFilter, 250);
  });

  // ---------- disconnect a client, or every connection of its user, behind a confirmation ----------
  // Each dialog: its confirmation names the target, and a confirmed one sends `event` and reports the answer.
  const kicks = [
    { dialog: $("kick-dialog"), attr: "sid", name: "kick-sid", cancel: "kick-cancel", event: "kick",
      done: function (sid) { return "Disconnected " + sid + "."; } },
    { dialog: $("kick-user-dialog"), attr: "sub", name: "kick-user-sub", cancel: "kick-user-cancel", event: "kick_user",
      done: function (sub, ack) {
        return "Disconnected user " + sub + ": " + ack.disconnected + " connection(s) on " + ack.instances
          + " instance(s)" + (ack.complete ? "." : " (some instances did not answer in time).");
      } },
  ];
  $("clients").addEventListener("click", function (event) {
    for (const kick of kicks) {
      const button = event.target.closest("button[data-" + kick.attr + "]");
      if (!button) continue;
      kick.dialog.dataset.target = button.dataset[kick.attr];
      $(kick.name).textContent = button.dataset[kick.attr];
      kick.dialog.returnValue = "";
      kick.dialog.showModal();
      $(kick.cancel).focus();
      return;
    }
  });
  for (const kick of kicks) {
    kick.dialog.addEventListener("close", function () {
      if (kick.dialog.returnValue !== "confirm") return;
      const target = kick.dialog.dataset.target;
      socket.timeout(5000).emit(kick.event, { [kick.attr]: target }, function (err, ack) {
        const ok = !err && ack && ack.ok;
        const result = $("clients-result");
        result.className = ok ? "ok" : "error";
        result.textContent = ok ? kick.done(target, ack)
          : (ack && ack.error ? ack.error.message : "No answer from the server.");
      });
    });
  }

  // ---------- watched channels and their events ----------
  let watched = [];
  let paused = false;
  let pending = [];
  let frameRequested = false;
  let eventsShown = 0;

  function sendWatch() {
    if (!socket.connected) return;
    socket.emit("watch", { channels: watched }, function (ack) {
      $("watch-error").textContent = ack && ack.ok ? "" : (ack && ack.error ? ack.error.message : "watch failed");
    });
  }
  function setWatched(channels) {
    watched = channels;
    const list = $("watched");
    list.replaceChildren.apply(list, watched.map(function (channel) {
      const item = el("li", null, channel);
      const remove = el("button", null, "×");
      remove.type = "button";
      remove.dataset.channel = channel;
      remove.setAttribute("aria-label", "Stop watching " + channel);
      item.append(remove);
      return item;
    }));
    if (lastSnapshot) renderChannels(lastSnapshot.channels, lastSnapshot.channel_count);
    updateEventsStatus();
    sendWatch();
  }
  $("watched").addEventListener("click", function (event) {
    const button = event.target.closest("button[data-channel]");
    if (button) setWatched(watched.filter(function (c) { return c !== button.dataset.channel; }));
  });
  $("watch-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const input = $("watch-channel");
    const channel = input.value.trim();
    const problem = nameProblem("channel", channel);
    $("watch-error").textContent = problem;
    if (problem) return;
    if (!watched.includes(channel)) setWatched(watched.concat([channel]));
    input.value = "";
  });
  $("pause").addEventListener("click", function () {
    paused = !paused;
    this.textContent = paused ? "Resume" : "Pause";
    this.setAttribute("aria-pressed", String(paused));
    if (!paused) scheduleFrame();
    updateEventsStatus();
  });
  $("event-filter").addEventListener("input", function () {
    const filter = this.value.trim().toLowerCase();
    for (const item of $("events").children) item.hidden = !matches(item.dataset.key, filter);
  });
  function matches(key, filter) { return !filter || key.includes(filter); }

  function updateEventsStatus() {
    let text;
    if (!watched.length) text = "Watch a channel to see its events here.";
    else if (paused) text = "Paused: " + pending.length + " new event(s) waiting.";
    else text = "Showing the latest " + Math.min(eventsShown, MAX_EVENT_ROWS) + " event(s).";
    setText("events-status", text);
  }

  socket.on("events", function (batch) {
    if (!watched.includes(batch.channel)) return;
    for (const item of batch.events) pending.push(item);
    if (pending.length > MAX_PENDING_EVENTS) pending.splice(0, pending.length - MAX_PENDING_EVENTS);
    if (paused) updateEventsStatus();
    else scheduleFrame();
  });
  function scheduleFrame() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(flushEvents);
  }
  // User-level actions this instance applied (disconnect user, unsubscribe, token revocations) join the event list.
  let lastControl = { instance: null, seq: 0 };
  function takeControlEvents(snap) {
    const rows = snap.control_events || [];
    const newest = rows.length ? rows[rows.length - 1].seq : 0;
    if (lastControl.instance !== snap.instance || newest < lastControl.seq) lastControl = { instance: snap.instance, seq: 0 };
    const fresh = rows.filter(function (row) { return row.seq > lastControl.seq; });
    if (!fresh.length) return;
    lastControl.seq = newest;
    for (const row of fresh) pending.push(Object.assign({ control: true }, row));
    if (paused) updateEventsStatus();
    else scheduleFrame();
  }
  function controlRow(item, filter) {
    const li = el("li", "fresh control");
    li.dataset.key = ("control " + item.action + " " + item.target).toLowerCase();
    li.hidden = !matches(li.dataset.key, filter);
    const line = el("div", "summary");
    line.append(el("span", "time", new Date(item.ts).toLocaleTimeString([], { hour12: false })),
      el("span", "ch", "control"), el("span", "ev", item.action),
      el("span", "preview", item.target + ": " + item.connections + " connection(s) here"));
    li.append(line);
    return li;
  }
  function eventRow(item, filter) {
    if (item.control) return controlRow(item, filter);
    const li = el("li", "fresh");
    li.dataset.key = (item.channel + " " + item.event).toLowerCase();
    li.hidden = !matches(li.dataset.key, filter);
    const details = el("details");
    const summary = el("summary");
    const json = JSON.stringify(item.data);
    summary.append(el("span", "time", new Date(item.ts).toLocaleTimeString([], { hour12: false })),
      el("span", "ch", item.channel + " #" + item.offset), el("span", "ev", item.event),
      el("span", "preview", json.length > 120 ? json.slice(0, 120) + "…" : json));
    details.append(summary);
    details.addEventListener("toggle", function () {
      // The pretty JSON is built only when someone looks at it.
      if (details.open && details.children.length === 1) details.append(el("pre", null, JSON.stringify(item.data, null, 2)));
    }, { once: true });
    li.append(details);
    return li;
  }
  function flushEvents() {
    frameRequested = false;
    if (paused || !pending.length) return;
    const batch = pending.splice(0, pending.length).slice(-MAX_EVENT_ROWS);
    const filter = $("event-filter").value.trim().toLowerCase();
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(eventRow(batch[i], filter));
    const list = $("events");
    list.prepend(fragment);
    while (list.children.length > MAX_EVENT_ROWS) list.lastChild.remove();
    eventsShown += batch.length;
    updateEventsStatus();
  }

  // ---------- publish ----------
  $("publish-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const channel = $("publish-channel").value.trim();
    const name = $("publish-event").value.trim();
    const raw = $("publish-data").value;
    const problems = { channel: nameProblem("channel", channel), event: nameProblem("event", name), data: "" };
    let data = null;
    try {
      data = raw.trim() === "" ? null : JSON.parse(raw);
    } catch (err) {
      problems.data = "not valid JSON: " + err.message;
    }
    showFieldErrors(problems);
    const result = $("publish-result");
    result.className = "";
    result.textContent = "";
    if (problems.channel || problems.event || problems.data) return;
    socket.timeout(5000).emit("publish", { channel: channel, event: name, data: data }, function (err, ack) {
      if (err) {
        result.className = "error";
        result.textContent = "No answer from the server; is it connected?";
      } else if (ack && ack.ok) {
        result.className = "ok";
        result.textContent = "Published to " + ack.channel + " at offset " + ack.offset + ".";
      } else {
        const error = (ack && ack.error) || { code: "error", message: "publish failed" };
        const field = { invalid_channel: "channel", invalid_event: "event", invalid_payload: "data",
          payload_too_large: "data" }[error.code];
        if (field) showFieldErrors(Object.assign({ channel: "", event: "", data: "" }, { [field]: error.message }));
        result.className = "error";
        result.textContent = error.message;
      }
    });
  });
  function showFieldErrors(problems) {
    for (const field of ["channel", "event", "data"]) {
      const input = $("publish-" + field);
      $("publish-" + field + "-error").textContent = problems[field];
      input.setAttribute("aria-invalid", problems[field] ? "true" : "false");
    }
  }

  // ---------- connect a client: snippets with a fresh token ----------
  $("connect-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const channel = $("connect-channel").value.trim();
    const problem = nameProblem("channel", channel);
    $("connect-error").textContent = problem;
    if (problem) return;
    socket.timeout(5000).emit("client_snippets", { channel: channel }, function (err, ack) {
      if (err || !ack || !ack.ok) {
        $("connect-error").textContent = err ? "No answer from the server; is it connected?"
          : (ack && ack.error ? ack.error.message : "could not make snippets");
        return;
      }
      for (const language of ["javascript", "python", "curl"]) $("snippet-" + language).textContent = ack.snippets[language];
      $("snippets-status").textContent = "For " + ack.channel + "; the token expires at " + fmtTime(ack.expires_at) + ".";
      $("snippets").hidden = false;
    });
  });
  $("snippets").addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const code = $(button.dataset.copy);
    function selectIt() {
      const range = document.createRange();
      range.selectNodeContents(code);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      button.textContent = "Selected: press Ctrl-C";
    }
    if (!navigator.clipboard) { selectIt(); return; }
    navigator.clipboard.writeText(code.textContent).then(function () { button.textContent = "Copied"; }, selectIt);
    setTimeout(function () { button.textContent = "Copy"; }, 2000);
  });

  // ---------- start ----------
  socket.on("snapshot", onSnapshot);
  initCharts();
  const initialWatch = document.querySelector('meta[name="initial-watch"]').content;
  if (initialWatch) setWatched(initialWatch.split(","));
})();
