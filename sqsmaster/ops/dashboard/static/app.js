// sqsmaster dashboard: each view is filled from /api/ and refreshed every few seconds, without a reload.
// Every value is put in the page as text (never as HTML): a task's kwargs or traceback cannot inject markup.
"use strict";

const VIEW = document.body.dataset.view;
const READ_ONLY = document.body.dataset.readOnly === "true";
const MESSAGE_ID = document.body.dataset.messageId;
const CSRF = document.querySelector("meta[name=csrf-token]").content;
const REFRESH_MS = 3000;
const content = document.getElementById("content");
const notice = document.getElementById("notice");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Sqsmaster-Csrf": CSRF },
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text, isError) {
  notice.textContent = text;
  notice.className = isError ? "error" : "";
}

// An action: confirm (naming the count), POST, say what happened, refresh the view.
async function act(question, url, body) {
  if (question === null) return;
  if (!window.confirm(question)) return;
  try {
    const result = await post(url, body);
    say(result.message || "done", false);
  } catch (error) {
    say(error.message, true);
  }
  refresh();
}

function actionButton(label, question, url, body, extra) {
  return el("button", Object.assign({
    class: "danger", disabled: READ_ONLY, title: READ_ONLY ? "the dashboard is read-only" : null,
    onclick: () => act(question(), url, body()),
  }, extra || {}), label);
}

// -- formatting --
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
function secs(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
const mb = (b) => (b ? (b / 2 ** 20).toFixed(0) + " MB" : "-");
const pct = (f) => (f === null || f === undefined ? "-" : (100 * f).toFixed(1) + " %");
const shortQueue = (url) => (url || "").split("/").pop();
const status = (row) => (row.running ? (row.stale ? "stale" : "running") : row.outcome);
const outcome = (row) => el("span", { class: "outcome-" + String(status(row)).replace(/ /g, "-") }, status(row));
const jobLink = (id) => el("a", { href: "/jobs/" + encodeURIComponent(id) }, id);
const num = (value) => el("td", { class: "num" }, value === null || value === undefined ? "-" : value);

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function bar(elapsed, total) {
  if (!total) return el("span", { class: "muted" }, secs(elapsed));
  const share = Math.min(elapsed / total, 1);
  return el("div", { class: "bar", title: secs(elapsed) + " of " + secs(total) },
    el("div", { class: "fill" + (share > 0.9 ? " late" : ""), style: "width:" + (100 * share).toFixed(1) + "%" }),
    el("span", {}, secs(elapsed) + " / " + secs(total)));
}

// -- views: each returns the node that replaces #content --
async function overview() {
  const [data, audit] = await Promise.all([getJSON("/api/overview"), getJSON("/api/actions")]);
  const cards = el("div", { class: "cards" },
    el("div", { class: "card" }, el("b", { id: "workers-live" }, data.workers), "workers"),
    el("div", { class: "card" }, el("b", { id: "slots-busy" }, data.busy), "busy slots"),
    el("div", { class: "card" }, el("b", { id: "slots-idle" }, data.idle), "idle slots"));
  const queues = table(
    ["queue", "visible", "in flight", "delayed", "dead letters", "ended (1 h)", "per min", "failure rate",
      "p50", "p95"],
    data.queues.map((q) => el("tr", { "data-queue": q.queue },
      el("td", { title: q.queue }, shortQueue(q.queue), q.error ? el("div", { class: "outcome-failed small" }, q.error) : null),
      num(q.visible), num(q.in_flight), num(q.delayed), num(q.dead_letter_visible), num(q.ended_last_hour),
      num(q.throughput_per_minute.toFixed(2)), num(pct(q.failure_rate)), num(secs(q.runtime_p50)),
      num(secs(q.runtime_p95)))), "no queue");
  const actions = table(["when", "who", "what", "target", "count", "detail"],
    audit.rows.slice(0, 10).map((a) => el("tr", {}, el("td", {}, when(a.at)), el("td", {}, a.who), el("td", {}, a.what),
      el("td", {}, a.target), num(a.count), el("td", { class: "small" }, a.detail || ""))), "no operator action yet");
  return el("div", {}, cards, queues, data.truncated ? el("p", { class: "muted" }, "(rates from the newest rows only)") : null,
    el("h3", {}, "Recent actions"), actions);
}

const selected = new Set();

async function running() {
  const data = await getJSON("/api/running");
  const live = new Set(data.rows.map((r) => r.message_id));
  for (const id of [...selected]) if (!live.has(id)) selected.delete(id);
  const rows = data.rows.map((r) => el("tr", { class: r.stale ? "stale" : null, "data-message-id": r.message_id },
    el("td", {}, el("input", { type: "checkbox", class: "pick", checked: selected.has(r.message_id), disabled: READ_ONLY,
      onchange: (e) => { if (e.target.checked) selected.add(r.message_id); else selected.delete(r.message_id); } })),
    el("td", {}, jobLink(r.message_id)), el("td", {}, r.task),
    el("td", { class: "small" }, el("code", {}, (r.kwargs || "").slice(0, 80))),
    el("td", {}, r.worker), el("td", {}, bar(r.elapsed, r.hard_timeout)), num(secs(r.heartbeat_age)), num(r.attempt),
    num(mb(r.peak_memory)),
    el("td", {}, r.stale ? el("span", { class: "badge stale" }, "stale") : null,
      r.kill_requested ? el("span", { class: "badge kill" }, "kill requested") : null),
    el("td", {}, actionButton("Kill", () => `Kill 1 running task: ${r.task} (message ${r.message_id})? It stops at its ` +
      "next heartbeat tick, then its message is dead-lettered.", "/api/actions/kill",
      () => ({ message_ids: [r.message_id] }), { "data-action": "kill" }))));
  const killSelected = actionButton("Kill selected", () => (selected.size ? `Kill ${selected.size} running task(s)? ` +
    "Each stops at its next heartbeat tick, then its message is dead-lettered." : (say("tick the tasks to kill first"), null)),
    "/api/actions/kill",
    () => ({ message_ids: [...selected] }), { id: "kill-selected" });
  return el("div", {}, el("div", { class: "toolbar" }, killSelected),
    table(["", "message", "task", "kwargs", "worker", "elapsed / hard timeout", "heartbeat age", "receive #",
      "peak memory", "", ""], rows, "nothing running"));
}

let cursors = [null];
let pageIndex = 0;

function jobQuery() {
  const params = new URLSearchParams(location.search);
  const cursor = cursors[pageIndex];
  if (cursor) params.set("cursor", cursor);
  return params;
}

async function jobs() {
  const data = await getJSON("/api/jobs?" + jobQuery());
  const first = pageIndex * 50 + 1;
  const rows = data.rows.map((r) => el("tr", { "data-message-id": r.message_id },
    el("td", {}, when(r.started)), el("td", {}, jobLink(r.message_id)), el("td", {}, r.task),
    el("td", { title: r.queue }, shortQueue(r.queue)), el("td", {}, r.worker), num(r.attempt), el("td", {}, outcome(r)),
    num(secs(r.runtime !== null ? r.runtime : r.elapsed)), el("td", { class: "small" }, r.exception || "")));
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", disabled: pageIndex === 0, onclick: () => { pageIndex -= 1; refresh(); } }, "← Newer"),
    el("span", { id: "page-info" }, data.rows.length ? `page ${pageIndex + 1} · rows ${first}–${first + data.rows.length - 1} of ${data.total}` : `0 of ${data.total}`),
    el("button", { id: "next", disabled: !data.cursor, onclick: () => {
      cursors = cursors.slice(0, pageIndex + 1).concat([data.cursor]); pageIndex += 1; refresh(); } }, "Older →"));
  return el("div", {}, pager, table(["started", "message", "task", "queue", "worker", "receive #", "status", "runtime",
    "exception"], rows, "no job matches"));
}

function setupJobFilters() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams(location.search);
  for (const input of form.elements) if (input.name && params.has(input.name)) input.value = params.get(input.name);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const input of form.elements) if (input.name && input.value) next.set(input.name, input.value);
    history.replaceState(null, "", "/jobs" + (next.toString() ? "?" + next : ""));
    cursors = [null];
    pageIndex = 0;
    refresh();
  });
}

async function job() {
  const data = await getJSON("/api/jobs/" + encodeURIComponent(MESSAGE_ID));
  const command = data.submit_command;
  const copy = command
    ? el("div", {}, el("h3", {}, "Copy as CLI (sends the task again)"), el("pre", { id: "submit-command" }, command),
      el("button", { onclick: () => navigator.clipboard && navigator.clipboard.writeText(command).then(() => say("copied", false)) }, "Copy"))
    : el("p", { class: "muted" }, "no command: the stored kwargs were cut to the job store's 4 KiB bound");
  const attempts = data.attempts.map((a) => el("section", { class: "attempt" },
    el("h3", {}, `attempt ${a.attempt}: `, outcome(a), a.action ? ` → ${a.action}` : ""),
    table(["task", "queue", "worker", "started", "ended", "runtime", "heartbeats", "peak memory"], [el("tr", {},
      el("td", {}, a.task), el("td", {}, a.queue), el("td", {}, a.worker), el("td", {}, when(a.started)),
      el("td", {}, when(a.ended)), num(secs(a.runtime !== null ? a.runtime : a.elapsed)), num(a.heartbeats),
      num(mb(a.peak_memory)))], ""),
    el("p", {}, "kwargs: ", el("code", {}, a.kwargs || "{}")),
    a.exception ? el("p", { class: "outcome-failed" }, a.exception) : null,
    a.traceback ? el("details", { "data-key": "tb-" + a.attempt }, el("summary", {}, "traceback"),
      el("pre", { class: "traceback" }, a.traceback)) : null));
  return el("div", {}, attempts, copy);
}

async function failures() {
  const data = await getJSON("/api/failures");
  const rows = data.groups.map((g) => {
    const key = g.task + " x " + g.exception_type;
    return el("tr", { "data-group": key },
      el("td", {}, g.task), el("td", {}, g.exception_type), num(g.count), num(g.messages), el("td", {}, when(g.latest.started)),
      el("td", { class: "wrap" }, el("details", { "data-key": "f-" + key }, el("summary", {}, g.latest.exception || "-"),
        el("pre", { class: "traceback" }, g.latest.traceback || "(no traceback)"))),
      el("td", {}, actionButton(`Requeue ${g.requeueable}`, () => `Requeue ${g.requeueable} message(s) of ${key}: ` +
        "send each one's task and kwargs to its queue again?", "/api/actions/requeue",
        () => ({ task: g.task, exception_type: g.exception_type }),
        { "data-action": "requeue", disabled: READ_ONLY || !g.requeueable }),
        g.cut ? el("div", { class: "small muted" }, `${g.cut} with kwargs cut to 4 KiB: not requeueable`) : null));
  });
  return el("div", {}, table(["task", "exception", "attempts", "messages", "latest", "latest exception", ""], rows,
    "no failure"), data.truncated ? el("p", { class: "muted" }, "(from the newest rows only)") : null);
}

async function deadLetters() {
  const data = await getJSON("/api/dead-letters");
  const ids = data.rows.map((r) => r.message_id);
  const queues = table(["queue", "dead-letter queue", "in the DLQ now"], data.queues.map((q) => el("tr", {},
    el("td", { title: q.queue }, shortQueue(q.queue)), el("td", {}, q.dead_letter_url || q.error || "no redrive policy"),
    num(q.dead_letter_visible))), "");
  const rows = data.rows.map((r) => el("tr", { "data-message-id": r.message_id },
    el("td", {}, jobLink(r.message_id)), el("td", {}, r.task), el("td", { title: r.queue }, shortQueue(r.queue)),
    num(r.attempt), el("td", {}, when(r.ended)), el("td", { class: "small" }, r.exception || ""),
    el("td", {}, actionButton("Redrive", () => `Redrive 1 message (${r.message_id}) to ${shortQueue(r.queue)}?`,
      "/api/actions/redrive", () => ({ message_ids: [r.message_id] }), { "data-action": "redrive" }), " ",
    actionButton("Delete", () => `Delete 1 message (${r.message_id}) from the dead-letter queue, unrun?`,
      "/api/actions/delete-dead-letters", () => ({ message_ids: [r.message_id] }), { "data-action": "delete" }))));
  const all = el("div", { class: "toolbar" },
    actionButton(`Redrive all (${ids.length})`, () => `Redrive ${ids.length} message(s) to their queues?`,
      "/api/actions/redrive", () => ({ message_ids: ids }), { id: "redrive-all", disabled: READ_ONLY || !ids.length }),
    actionButton(`Delete all (${ids.length})`, () => `Delete ${ids.length} message(s) from the dead-letter queues, unrun?`,
      "/api/actions/delete-dead-letters", () => ({ message_ids: ids }), { id: "delete-all", disabled: READ_ONLY || !ids.length }));
  return el("div", {}, queues, all, table(["message", "task", "queue", "receives", "dead-lettered", "exception", ""],
    rows, "no dead letter in the job store"));
}

async function workers() {
  const data = await getJSON("/api/workers");
  const rows = data.rows.map((w) => el("tr", { class: w.stale ? "stale" : null },
    el("td", {}, w.host), num(w.pid), el("td", {}, w.version), el("td", { class: "small" }, w.queues.map(shortQueue).join(", ")),
    num(w.concurrency), num(w.busy), num(secs(w.age)),
    el("td", {}, w.stopped ? "stopped " + when(w.stopped) : w.stale ? el("span", { class: "badge stale" }, "stale") : "live")));
  return table(["host", "pid", "version", "queues", "concurrency", "busy", "last heartbeat", "state"], rows, "no worker");
}

let timelineURL = null;

async function timeline() {
  const form = document.getElementById("window");
  const params = new URLSearchParams();
  for (const input of form.elements) if (input.name && input.value) params.set(input.name, input.value);
  const response = await fetch("/timeline.png?" + params);
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.error || response.statusText);
  }
  if (timelineURL) URL.revokeObjectURL(timelineURL);
  timelineURL = URL.createObjectURL(await response.blob());
  return el("img", { class: "timeline", id: "timeline", src: timelineURL, alt: "job timeline" });
}

const RENDER = { overview, running, jobs, job, failures, "dead-letters": deadLetters, workers, timeline };
let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const open = new Set([...content.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const node = await RENDER[VIEW]();
    for (const d of node.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
    content.replaceChildren(node);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    content.replaceChildren(el("p", { class: "outcome-failed", id: "error" }, error.message));
  } finally {
    busy = false;
  }
}

if (VIEW === "jobs") setupJobFilters();
if (VIEW === "timeline") {
  document.getElementById("window").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
}
refresh();
// The timeline is drawn on demand (matplotlib takes a moment); every other view follows the store.
if (VIEW !== "timeline") setInterval(refresh, REFRESH_MS);
