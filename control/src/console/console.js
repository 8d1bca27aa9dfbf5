// Strata's admin console. Polls GET /admin/console every second with the admin token and
// renders what it answers. Every string from the node goes into the page as text
// (textContent), never as markup.
"use strict";

const POLL_INTERVAL_MS = 1000;
const TOKEN_KEY = "strata-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const MINUTE_POINTS = 60;
const CHART = { width: 640, height: 180, left: 48, right: 48, top: 10, bottom: 22 };

let token = takeToken();
let timer = null;
let unreachableSince = null;

// The token given once in the address (`/?token=...`) is kept for this tab only and taken out
// of the address bar, so it stays out of the history and of copied links.
function takeToken() {
  const parameters = new URLSearchParams(window.location.search);
  const given = parameters.get("token");
  if (given !== null) {
    sessionStorage.setItem(TOKEN_KEY, given);
    parameters.delete("token");
    const rest = parameters.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function element(id) {
  return document.getElementById(id);
}

function make(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (className) made.className = className;
  return made;
}

function clock(milliseconds) {
  return new Date(milliseconds).toTimeString().slice(0, 8);
}

async function poll() {
  clearTimeout(timer);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const response = await fetch("/admin/console", { headers, cache: "no-store" });
    if (response.status === 401) {
      showLogin(token ? "The token was refused." : "");
      return;
    }
    const body = await response.json();
    if (!response.ok || body.error_code !== 0) {
      throw new Error(body.error_message || "status " + response.status);
    }
    render(body);
  } catch (error) {
    showUnreachable(error);
  }
  timer = setTimeout(poll, POLL_INTERVAL_MS);
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  element("console").hidden = true;
  clear(element("members").tBodies[0]);
  clear(element("events"));
  element("login").hidden = false;
  element("login-error").textContent = message;
  setConnection("login", "This node asks for its admin token.");
}

function login(event) {
  event.preventDefault();
  token = element("token").value;
  sessionStorage.setItem(TOKEN_KEY, token);
  element("token").value = "";
  element("login").hidden = true;
  poll();
}

function setConnection(state, text) {
  const connection = element("connection");
  connection.dataset.state = state;
  connection.textContent = text;
}

function showUnreachable(error) {
  if (unreachableSince === null) unreachableSince = Date.now();
  const since = clock(unreachableSince);
  setConnection("unreachable", "Unreachable since " + since + ": " + error.message +
    " (the figures below are the last received)");
}

function clear(parent) {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
}

function render(state) {
  unreachableSince = null;
  element("login").hidden = true;
  element("console").hidden = false;
  setConnection("connected", "Live, updated " + clock(state.node.time_ms));
  const node = state.node;
  element("node").textContent = (node.name || "(no name)") + " · " + node.role +
    " · epoch " + node.epoch;
  const health = element("health");
  health.textContent = state.health.healthy ? "healthy" : "unhealthy";
  health.className = state.health.healthy ? "ok" : "bad";
  renderMembers(state);
  renderProblems(state.health.problems || []);
  renderSeries(state.series);
  renderUpload(state.upload);
  renderEvents(state.events || []);
}

function renderMembers(state) {
  const body = element("members").tBodies[0];
  clear(body);
  for (const member of state.members) {
    const row = make("tr");
    row.dataset.member = member.name;
    row.dataset.status = member.status;
    row.appendChild(make("td", member.name));
    row.appendChild(make("td", member.role));
    row.appendChild(make("td", member.status, member.status === "alive" ? "ok" : "bad"));
    row.appendChild(make("td", inSync(member.in_sync)));
    row.appendChild(make("td", epochOf(member, state), "number"));
    row.appendChild(make("td", member.lag === undefined ? "" : member.lag, "number"));
    row.appendChild(make("td", member.heartbeat === undefined ? "" : member.heartbeat, "number"));
    row.appendChild(make("td", member.address || "", "muted"));
    body.appendChild(row);
  }
  if (state.members.length === 0) {
    const row = make("tr");
    const cell = make("td", "This node is in no cluster (role " + state.node.role + ").");
    cell.colSpan = 8;
    row.appendChild(cell);
    body.appendChild(row);
  }
}

function inSync(flag) {
  if (flag === true) return "yes";
  if (flag === false) return "no";
  return "";
}

// Epochs known here: this node's, and the leader's as the controller records it.
function epochOf(member, state) {
  if (member.name === state.node.name) return state.node.epoch;
  if (member.role === "leader" && state.leader_epoch !== undefined) return state.leader_epoch;
  return "";
}

function renderProblems(problems) {
  const list = element("problems");
  clear(list);
  for (const problem of problems) list.appendChild(make("li", problem, "bad"));
}

function renderUpload(upload) {
  const text = upload === null
    ? "No archive: this node uploads nothing."
    : "Backlog " + upload.backlog_objects + " objects (" + upload.backlog_bytes + " bytes), " +
      upload.failures + " failures" +
      (upload.last_error ? ", last error: " + upload.last_error : "");
  element("upload").textContent = text;
}

function renderEvents(events) {
  const list = element("events");
  clear(list);
  for (const event of events) {
    const item = make("li", null, event.kind);
    item.dataset.kind = event.kind;
    item.appendChild(make("span", clock(event.time_ms) + " ", "muted"));
    item.appendChild(make("span", event.kind, "kind"));
    item.appendChild(make("span", " " + event.text));
    list.appendChild(item);
  }
  if (events.length === 0) list.appendChild(make("li", "Nothing happened yet.", "muted"));
}

function renderSeries(series) {
  const rates = series.commands_per_second;
  const latencies = series.p99_ms;
  const last = rates.length - 1;
  element("rates").textContent = last < 0
    ? "Sampling…"
    : "Now " + rates[last].toFixed(0) + " commands/s, " + series.errors_per_second[last]
      .toFixed(0) + " errors/s, p99 " +
      (latencies[last] === null ? "–" : latencies[last].toFixed(3) + " ms") +
      " (last " + Math.round(rates.length * series.interval_ms / 1000) + " s)";
  drawChart(series);
}

function drawChart(series) {
  const chart = element("chart");
  clear(chart);
  // The time axis spans the data, at least a minute and at most the ring.
  const slots = Math.min(series.samples_max - 1, Math.max(MINUTE_POINTS, rates(series).length));
  const rateTop = Math.max(1, ...series.commands_per_second);
  const latencyTop = Math.max(0.001, ...series.p99_ms.filter((value) => value !== null));
  const bottom = CHART.height - CHART.bottom;
  chart.appendChild(line(CHART.left, bottom, CHART.width - CHART.right, bottom));
  chart.appendChild(label(2, CHART.top + 10, rateTop.toFixed(0) + "/s"));
  chart.appendChild(label(CHART.width - CHART.right + 4, CHART.top + 10,
    latencyTop.toFixed(2) + "ms"));
  chart.appendChild(label(CHART.left, CHART.height - 6, "−" + span(slots * series.interval_ms)));
  chart.appendChild(label(CHART.width - CHART.right - 20, CHART.height - 6, "now"));
  chart.appendChild(path(series.commands_per_second, rateTop, slots, "throughput"));
  chart.appendChild(path(series.p99_ms, latencyTop, slots, "latency"));
}

function rates(series) {
  return series.commands_per_second;
}

function span(milliseconds) {
  const seconds = Math.round(milliseconds / 1000);
  return seconds < 120 ? seconds + " s" : Math.round(seconds / 60) + " min";
}

// A polyline of `values` (newest at the right), scaled to `top`; gaps where a value is null.
function path(values, top, slots, className) {
  const plot = document.createElementNS(SVG, "path");
  const width = CHART.width - CHART.left - CHART.right;
  const height = CHART.height - CHART.top - CHART.bottom;
  const offset = slots - values.length;
  let drawing = "";
  let pen = "M";
  values.forEach((value, index) => {
    if (value === null) {
      pen = "M";
      return;
    }
    const x = CHART.left + ((offset + index) / Math.max(1, slots)) * width;
    const y = CHART.top + height - (value / top) * height;
    drawing += pen + x.toFixed(1) + " " + y.toFixed(1) + " ";
    pen = "L";
  });
  plot.setAttribute("d", drawing.trim() || "M0 0");
  plot.setAttribute("class", className);
  return plot;
}

function line(x1, y1, x2, y2) {
  const drawn = document.createElementNS(SVG, "line");
  for (const [name, value] of Object.entries({ x1, y1, x2, y2 })) {
    drawn.setAttribute(name, value);
  }
  drawn.setAttribute("class", "axis");
  return drawn;
}

function label(x, y, text) {
  const written = document.createElementNS(SVG, "text");
  written.setAttribute("x", x);
  written.setAttribute("y", y);
  written.textContent = text;
  return written;
}

document.addEventListener("DOMContentLoaded", () => {
  element("login-form").addEventListener("submit", login);
  poll();
});
