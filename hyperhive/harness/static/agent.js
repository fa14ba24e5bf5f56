// The agent page (F29-F31): history is backfilled (rows without animation)
// before the live stream opens from the last id seen; the state badge and the
// banner follow the same transitions as hyperhive/harness/bus.py.
"use strict";

const TRANSITIONS = {
  turn_start: "thinking", turn_end: "idle",
  compact_start: "compacting", compact_end: "idle",
  ready: "idle", stopped: "idle",
};
const $ = (id) => document.getElementById(id);
const term = $("term");
let state = "idle";
let asleep = false;  // hibernating (issue 17): the daemon answers for it, the badge says so
let lastId = 0;
let retry = 250;

function nextState(s, kind) { return TRANSITIONS[kind] || s; }

function setState(s) {
  state = s;
  const shown = asleep ? "hibernating" : s;
  const badge = $("state");
  badge.textContent = shown;
  badge.dataset.state = shown;
  badge.className = "badge state-" + shown;
  $("banner").classList.toggle("active", !asleep && s !== "idle");
}

function hhmmss(ts) { return new Date(ts * 1000).toTimeString().slice(0, 8); }

function short(v, n) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > n ? s.slice(0, n) + "…" : s;
}

function describe(ev) {
  const d = ev.data || {};
  switch (ev.kind) {
    case "turn_start": {
      const msgs = d.messages || [];
      const from = [...new Set(msgs.map((m) => m.from))].join(", ");
      return "▶ turn · " + msgs.length + " message" + (msgs.length === 1 ? "" : "s") +
        (from ? " from " + from : "") + msgs.map((m) => "\n  " + m.from + ": " + short(m.body, 300)).join("");
    }
    case "turn_end": return "■ turn end";
    case "text": return d.text;
    case "thinking": return "… " + d.text;
    case "tool_use": return "⚒ " + d.name + " " + short(d.input || {}, 400);
    case "tool_result": return "↳ " + short(d.content || "", 600);
    case "result": {
      const u = d.usage || {};
      const cost = typeof d.total_cost_usd === "number" ? " · $" + d.total_cost_usd.toFixed(4) : "";
      return "✓ " + (d.is_error ? "failed" : "done") + " · " + (d.num_turns ?? "?") + " steps · " +
        (u.input_tokens ?? 0) + " in / " + (u.output_tokens ?? 0) + " out" + cost;
    }
    case "error": return "✗ " + d.error + (d.stderr ? "\n  " + short(d.stderr, 600) : "");
    case "note": return "✎ you: " + d.body;
    case "compact_requested": return "⟳ compaction requested";
    case "compact_start": return "⟳ compacting…";
    case "compacting": return "⟳ claude is compacting";
    case "compacted": return "⟳ compacted · " + (d.pre_tokens ?? "?") + " → " + (d.post_tokens ?? "?") + " tokens";
    case "compact_result": return "⟳ compaction " + d.result + (d.error ? ": " + d.error : "");
    case "compact_end": return "⟳ compaction over";
    case "cancel_requested": return "⊘ cancel requested";
    case "cancelled": return "⊘ cancelled";
    case "retry": return "↻ API retry " + (d.attempt ?? "") + " (" + (d.error_status ?? d.error ?? "") + ")";
    case "ready": return "● harness ready · " + (d.driver || "");
    case "web_ui": return "● web UI on port " + d.port;
    case "stopped": return "○ harness stopped";
    default: return ev.kind + " " + short(d, 300);
  }
}

function render(ev, animate) {
  const row = document.createElement("div");
  row.className = "ev ev-" + ev.kind + (animate ? "" : " no-anim");
  if (ev.kind === "tool_result" && ev.data && ev.data.is_error) row.classList.add("is-error");
  row.dataset.id = ev.id;
  row.dataset.kind = ev.kind;
  const ts = document.createElement("span");
  ts.className = "ts";
  ts.textContent = hhmmss(ev.ts);
  row.append(ts, document.createTextNode(describe(ev)));
  return row;
}

function atBottom() { return term.scrollHeight - term.scrollTop - term.clientHeight < 24; }

function append(events, animate) {
  const stick = atBottom();
  const frag = document.createDocumentFragment();
  let s = state;
  for (const ev of events) {
    // The server sends only ids above ?after=; a smaller one means a fresh
    // events database (purged state), so take it rather than go blind.
    lastId = ev.id;
    s = nextState(s, ev.kind);
    frag.append(render(ev, animate));
  }
  term.append(frag);
  setState(s);
  if (stick) term.scrollTop = term.scrollHeight;
}

function renderState(st) {
  const was = asleep;
  asleep = st.state === "hibernating";
  if (asleep !== was) setState(state);
  $("name").textContent = st.name;
  document.title = st.name + " · hyperhive";
  $("driver").textContent = st.driver;
  $("login").hidden = !st.needs_login;
  const rows = st.inbox || [];
  $("inbox").hidden = rows.length === 0;
  $("inbox-count").textContent = rows.length ? "(" + rows.length + ")" : "";
  const box = $("inbox-rows");
  box.replaceChildren();
  for (const m of rows.slice().reverse()) {
    const t = document.createElement("span");
    t.className = "t" + (m.delivered_at ? "" : " undelivered");
    t.textContent = new Date(m.sent_at * 1000).toLocaleString();
    const f = document.createElement("span");
    f.className = "f";
    f.textContent = m.from;
    const b = document.createElement("span");
    b.className = "b";
    b.textContent = m.body;
    box.append(t, f, b);
  }
}

async function refreshState() {
  try {
    const r = await fetch("/api/state");
    if (r.ok) renderState(await r.json());
  } catch (e) { /* the live stream shows the outage */ }
}

function openLive() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/events/live?after=" + lastId);
  ws.onopen = () => { $("conn").classList.add("up"); retry = 250; };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    append([ev], true);
    if (ev.kind === "turn_start" || ev.kind === "turn_end" || ev.kind === "ready") refreshState();
  };
  ws.onclose = () => {
    $("conn").classList.remove("up");
    setTimeout(openLive, retry);
    retry = Math.min(retry * 2, 4000);
  };
}

function toast(text, isErr) {
  const t = $("toast");
  t.textContent = text;
  t.className = "toast" + (isErr ? " err" : "");
  t.hidden = false;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
  return data;
}

async function submitPrompt(ev) {
  ev.preventDefault();
  const input = $("prompt-input");
  const button = $("prompt-send");
  const text = input.value.trim();
  if (!text) return;
  button.disabled = true;
  try {
    if (text === "/cancel") {
      const r = await post("/cancel");
      toast(r.cancelled ? "turn cancelled" : "no turn was running", false);
    } else if (text === "/compact") {
      await post("/compact");
      toast("compaction queued", false);
    } else if (text.startsWith("/")) {
      throw new Error("unknown command " + text.split(/\s/)[0] + " (try /cancel or /compact)");
    } else {
      await post("/send", { body: text });
      toast("note queued for the next turn", false);
    }
    input.value = "";
  } catch (e) {
    toast(String(e.message || e), true);
  } finally {
    button.disabled = false;
    input.focus();
  }
}

async function boot() {
  $("prompt").addEventListener("submit", submitPrompt);
  await refreshState();
  try {
    const r = await fetch("/events/history");
    const h = await r.json();
    append(h.events || [], false);  // backfilled rows don't animate; the walk seeds badge + banner
  } catch (e) { toast("could not load history: " + e, true); }
  term.scrollTop = term.scrollHeight;
  document.body.dataset.ready = "1";
  openLive();
  setInterval(refreshState, 5000);
}

boot();
