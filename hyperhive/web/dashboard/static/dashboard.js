// The operator dashboard: one state object, rendered section by section with
// keyed rows (a row is rebuilt only when its data changed, so open journals
// and half-typed answers survive updates). Push over /ws; /api/state every
// 5 s as the fallback. Forms post asynchronously with the session's XSRF token
// (the server put it into this page; it is no cookie: every page on any
// 127.0.0.1 port could read and plant those).
"use strict";

const hive = { state: null, initial: true, skew: 0, pushes: [], ws: null };
window.hive = hive;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

const XSRF = (document.querySelector('meta[name="hive-xsrf"]') || {}).content || "";

function loggedOut() {  // the session is gone (expired, or the token was rotated)
  const conn = document.getElementById("conn");
  conn.textContent = "logged out: open the login URL (hive url)";
  conn.classList.remove("live");
  hive.loggedOut = true;
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "";
}

// F10's chip, as questions_core.countdown_chip formats it.
function chip(secondsLeft) {
  const s = Math.max(0, Math.floor(secondsLeft));
  if (s < 60) return `⏳ ${s}s`;
  if (s < 3600) return `⏳ ${Math.floor(s / 60)}m ${s % 60}s`;
  return `⏳ ${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function toast(text, ok) {
  const t = el("div", { class: "toast " + (ok ? "ok" : "err"), role: "status", text });
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), ok ? 3500 : 7000);
}

async function post(url, params) {
  const res = await fetch(url, {
    method: "POST", credentials: "same-origin", body: params,
    headers: { "X-XSRF-Token": XSRF },
  });
  if (res.status === 401) loggedOut();
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON: use the status */ }
  if (!res.ok || !data || !data.ok) {
    const msg = data && data.error ? data.error.message : `HTTP ${res.status}`;
    throw new Error(msg);
  }
  return data;
}

// One path for every action (F34): confirm once if destructive, spinner in the
// button, a toast with the result, the button re-enabled either way.
async function act(button, action, params, confirmText, onOk) {
  if (confirmText && !window.confirm(confirmText)) return;
  const label = (button && button.dataset.done) || (button ? button.textContent.trim() : "done");
  if (button) { button.disabled = true; button.classList.add("spinning"); }
  try {
    await post(action, params);
    toast(`${label}: ok`, true);
    if (onOk) onOk();
  } catch (e) {
    toast(`${label}: ${e.message}`, false);
  } finally {
    if (button) { button.disabled = false; button.classList.remove("spinning"); }
  }
}

// Forms with data-action (questions, approvals, send, spawn).
document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (!form.dataset || !form.dataset.action) return;
  ev.preventDefault();
  const button = ev.submitter || form.querySelector("button[type=submit], button:not([type])");
  act(button, form.dataset.action, new URLSearchParams(new FormData(form)), form.dataset.confirm, () => {
    for (const name of (form.dataset.reset || "").split(",").filter(Boolean)) {
      if (form.elements[name]) form.elements[name].value = "";
    }
  });
});

// Row buttons with data-post: no <form> per button (a thousand rows of forms
// took seconds to build); checked boxes beside the button go along.
document.addEventListener("click", (ev) => {
  const button = ev.target.closest ? ev.target.closest("button[data-post]") : null;
  if (!button) return;
  const params = new URLSearchParams();
  for (const box of button.parentElement.querySelectorAll("input[type=checkbox]:checked")) params.set(box.name, box.value);
  act(button, button.dataset.post, params, button.dataset.confirm);
});

const TICKING = new Set(["chip", "uptime", "age", "age_seconds"]);

// Keyed rows: keep a row whose signature is unchanged, rebuild (or update) the rest.
function renderRows(box, items, key, build, update) {
  const existing = new Map();
  for (const node of Array.from(box.children)) {
    if (node.dataset && node.dataset.key !== undefined) existing.set(node.dataset.key, node);
    else node.remove();
  }
  const wanted = [];
  for (const item of items) {
    const k = String(key(item));
    // Ticking texts are not part of a row's identity: a rebuild would lose typed answers.
    const sig = JSON.stringify(item, (k, v) => (TICKING.has(k) ? undefined : v));
    let node = existing.get(k);
    existing.delete(k);
    if (node && node.dataset.sig !== sig) {
      if (update) update(node, item);
      else { node.remove(); node = null; }
    }
    if (!node) {
      node = build(item);
      node.dataset.key = k;
      if (!hive.initial) {
        node.classList.add("fresh");
        node.addEventListener("animationend", () => node.classList.remove("fresh"), { once: true });
      }
    }
    node.dataset.sig = sig;
    wanted.push(node);
  }
  for (const node of existing.values()) node.remove();
  // Walk siblings, not box.children[i]: a live collection re-indexes after each insert (O(n²)).
  let cursor = box.firstElementChild;
  for (const node of wanted) {
    if (node === cursor) cursor = cursor.nextElementSibling;
    else box.insertBefore(node, cursor);
  }
}

function empty(box, items, text) {
  const p = box.parentElement.querySelector(":scope > p.empty");
  if (items.length === 0 && !p) box.before(el("p", { class: "empty", text }));
  if (items.length > 0 && p) p.remove();
}

function setCount(section, n) {
  const c = document.querySelector(`#${section} h2 .count`);
  if (c) c.textContent = n ? String(n) : "";
}

function postButton(path, text, done, opts = {}) {
  return el("button", { type: "button", class: opts.danger ? "danger" : null, text, "data-post": path,
    "data-done": done, "data-confirm": opts.confirm || null });
}

function verbButton(name, verb, opts = {}) {
  return postButton(`/${verb}/${name}`, verb, `${verb} ${name}`, opts);
}

// --- containers --------------------------------------------------------------
const BADGE_TITLES = {
  "needs-login": "the claude driver has no login: log in, or give the daemon a key",
  "needs-update": "its config changed after the container was built: rebuild to apply",
  unsandboxed: "the backend could not sandbox this agent (--sandbox off, or bwrap missing): "
    + "it runs with the daemon's view of the host",
  "over-budget": "over its budget (or the fleet's): it starts no turn and its messages wait "
    + "until the operator raises the budget (see its question)",
};

function badgeChip(b) {
  const warn = b === "unsandboxed";
  return el("span", { class: `chip badge ${b}`, title: BADGE_TITLES[b] || null,
    text: (warn ? "⚠ " : "") + b.replace("-", " ") });
}

// Issue 14: the agent's clone, e.g. "hive/a +3 *" (3 commits ahead of the repo's HEAD,
// uncommitted changes); "^2" commits not pulled yet; "?" could not be checked.
function workspaceChip(ws, text) {
  if (!ws || !text) return null;
  const cls = ["chip", "workspace", ws.dirty ? "dirty" : null, ws.unpulled ? "unpulled" : null,
    ws.reason ? "unknown" : null].filter(Boolean).join(" ");
  const title = [ws.repo ? `clone of ${ws.repo}` : "workspace with no repository",
    ws.ahead != null ? `${ws.ahead} commit(s) ahead of the repo's HEAD` : null,
    ws.lost ? `a purge would lose: ${ws.lost}` : "nothing a purge would lose"].filter(Boolean).join("\n");
  return el("span", { class: cls, title, text: `⎇ ${text}` });
}

// The facts a purge would destroy, and a "force" box to purge them anyway.
function lostWarning(lost) {
  return lost ? `\n\nIts workspace holds work the operator's repo does not keep: ${lost}.\n`
    + `Without "force" the purge is refused.` : "";
}

function forceBox(lost) {
  return lost ? el("label", { class: "opt force", title: `purge even: ${lost}` },
    el("input", { type: "checkbox", name: "force", value: "1" }), "force") : null;
}

// Issue 15: what it spent today, its budget as spent/limit (amber past 80 %, red
// over it) and the last 24 hours, one bar an hour. The SVG comes from the server's
// sparkline.py: built from numbers and an escaped title only, so it is inserted as is.
function costCell(cost, who) {
  if (!cost) return null;
  const spark = el("span", { class: "sparkwrap" });
  spark.innerHTML = cost.spark;
  const budget = cost.budget_text ? el("span", { class: `budget standing-${cost.standing}`,
    title: `${who}'s budget: ${cost.budget_text} spent (${cost.standing})`, text: cost.budget_text }) : null;
  return el("span", { class: `cost standing-${cost.standing}` },
    el("span", { class: "today", text: cost.today + (cost.reported ? " (reported)" : ""),
      title: `${who} spent ${cost.today} today (from local midnight)`
        + (cost.reported ? "; partly the CLI's reported cost (a model the price table lacks)" : "") }),
    spark, budget);
}

function renderFleet(f) {
  const box = document.getElementById("fleet");
  box.hidden = !f;
  if (!f) return;
  box.replaceChildren(...[el("span", { class: "label", text: "fleet today" }), costCell(f, "the fleet"),
    f.over_budget ? el("span", { class: "chip badge over-budget", text: "over budget",
      title: "the fleet is over its budget: no agent starts a turn until the operator raises it" }) : null,
  ].filter(Boolean));
}

function containerLine1(c) {
  const kids = [
    el("span", { class: "name", text: c.name }),
    el("span", { class: `chip ${c.role}`, text: c.role }),
    el("span", { class: `pill ${c.busy ? "pending" : c.state}`, text: c.pill }),
    c.activity ? el("span", { class: `chip activity ${c.activity}`, text: c.activity }) : null,
    ...c.badges.map(badgeChip),
    workspaceChip(c.workspace, c.workspace_text),
  ];
  const meta = [c.driver, c.pid ? `pid ${c.pid}` : null, c.node ? `node ${c.node.address} ${c.node.node_id.slice(0, 8)}` : null,
    c.uptime ? `up ${c.uptime}` : null,
    c.restarts ? `${c.restarts} restarts` : null, c.last_exit && c.state !== "running" ? c.last_exit : null,
    `inbox ${c.undelivered}`].filter(Boolean).join(" · ");
  kids.push(el("span", { class: "meta", text: meta }));
  // Its cgroup's figures (the daemon reads them every 10 s); none while stopped. Its dir's disk use always.
  const usage = [c.memory ? `mem ${c.memory}` : null, c.pids, c.disk_text ? `disk ${c.disk_text}` : null]
    .filter(Boolean).join(" · ");
  if (usage) {
    kids.push(el("span", { class: "meta usage", text: usage,
      title: "memory now/peak · tasks in its cgroup (processes and threads, as its pids limit counts them)"
        + " · disk its whole dir takes (≥: a lower bound)" }));
  }
  if (c.cost) kids.push(costCell(c.cost, c.name));
  // The daemon relays the agent's UI on its sticky port (agents/<name>/port), shown only while it runs.
  if (c.port) {
    kids.push(el("a", { class: "web", href: `${location.protocol}//${location.hostname}:${c.port}/`,
      target: "_blank", rel: "noopener", text: "web ui ↗" }));
  }
  return el("div", { class: "line1" }, kids);
}

function containerLine2(c) {
  const n = c.name;
  const destroy = c.role === "manager" ? [] : [
    el("label", { class: "opt" }, el("input", { type: "checkbox", name: "purge", value: "1" }), "purge"),
    forceBox(c.workspace && c.workspace.lost),
    verbButton(n, "destroy", { danger: true,
      confirm: `Destroy ${n}? With "purge" its state and applied config are wiped too.`
        + lostWarning(c.workspace && c.workspace.lost) })];
  return el("div", { class: "line2 actions" },
    c.state === "running" ? verbButton(n, "stop") : verbButton(n, "start"),
    verbButton(n, "restart"), verbButton(n, "rebuild"),
    verbButton(n, "kill", { danger: true, confirm: `Kill ${n} now (no grace)?` }),
    destroy);
}

// F35: collapsed; its controls are built and the log fetched on first open
// (a thousand rows do not each carry a <select>).
function journalBlock(name) {
  const d = el("details", { class: "journal" }, el("summary", { text: `↳ logs · ${name}` }));
  d.addEventListener("toggle", () => {
    if (d.open && !d.dataset.loaded) { d.dataset.loaded = "1"; journalBody(d, name); }
  });
  return d;
}

function journalBody(d, name) {
  const unit = el("select", { name: "unit" },
    el("option", { value: "harness", text: "harness" }), el("option", { value: "", text: "whole machine" }));
  const refresh = el("button", { type: "button", class: "refresh", text: "refresh" });
  const box = el("pre", { class: "jbox" });
  d.append(el("div", { class: "jbar" }, unit, refresh), box);
  async function load() {
    refresh.disabled = true; refresh.classList.add("spinning");
    try {
      const res = await fetch(`/api/journal/${name}?unit=${encodeURIComponent(unit.value)}&lines=500`,
        { credentials: "same-origin" });
      const data = await res.json();
      if (!data.ok) throw new Error(data.error.message);
      box.textContent = data.text || "(empty)";
      box.dataset.unit = data.unit;
      box.scrollTop = box.scrollHeight;
    } catch (e) {
      toast(`logs of ${name}: ${e.message}`, false);
    } finally {
      refresh.disabled = false; refresh.classList.remove("spinning");
    }
  }
  refresh.addEventListener("click", load);
  unit.addEventListener("change", load);
  load();
}

function buildContainer(c) {
  const row = el("div", { class: "row container" + (c.busy ? " busy" : "") },
    containerLine1(c), containerLine2(c), journalBlock(c.name));
  return row;
}

function updateContainer(row, c) {  // keep the journal block as it is
  row.classList.toggle("busy", c.busy);
  row.querySelector(".line1").replaceWith(containerLine1(c));
  row.querySelector(".line2").replaceWith(containerLine2(c));
}

function renderContainers(list) {
  const box = document.querySelector("#containers .rows");
  renderRows(box, list, (c) => c.name, buildContainer, updateContainer);
  setCount("containers", list.length);
  const names = list.map((c) => c.name).join(" ");
  if (names !== hive.names) {
    hive.names = names;
    document.getElementById("agent-names").replaceChildren(...list.map((c) => el("option", { value: c.name })));
  }
}

// --- kept state --------------------------------------------------------------
function renderTombstones(list) {
  const box = document.querySelector("#tombstones .rows");
  renderRows(box, list, (t) => t.name, (t) => el("div", { class: "row tombstone" },
    el("div", { class: "line1" }, el("span", { class: "name", text: t.name }),
      el("span", { class: "meta", text: `${t.size} · modified ${t.age} ago` }),
      t.credentials_kept ? el("span", { class: "chip", text: "credentials kept" })
        : el("span", { class: "chip badge", text: "no credentials" }),
      workspaceChip(t.workspace, t.workspace_text),
      t.lost ? el("span", { class: "meta lost", text: `would lose: ${t.lost}` }) : null),
    el("div", { class: "line2" },
      postButton(`/revive/${t.name}`, "revive", `revive ${t.name}`),
      forceBox(t.lost),
      postButton(`/purge-tombstone/${t.name}`, "purge", `purge ${t.name}`, { danger: true,
        confirm: `Purge ${t.name}? Its state and applied config are deleted for good.` + lostWarning(t.lost) }))));
  empty(box, list, "no kept state");
  setCount("tombstones", list.length);
}

// --- questions ----------------------------------------------------------------
// A permission question's tool input (issue 14): a command in monospace, an edit
// as a diff (+/- lines coloured), a file's content, any other input as JSON.
// Always as text nodes: what an agent put there is never markup.
function permissionBlock(p) {
  const shown = p.shown || {};
  if (shown.kind === "command") {
    return el("div", { class: "perm" }, el("pre", { class: "perm-command", text: shown.text || "" }),
      shown.description ? el("div", { class: "when", text: shown.description }) : null);
  }
  if (shown.kind === "diff") {
    const lines = (shown.text || "").split("\n").map((l) => el("span", {
      class: l.startsWith("+++") || l.startsWith("---") ? "diff-file" : l.startsWith("+") ? "diff-add"
        : l.startsWith("-") ? "diff-del" : l.startsWith("@@") ? "diff-hunk" : null, text: l + "\n" }));
    return el("div", { class: "perm" }, el("pre", { class: "diff perm-diff" }, ...lines));
  }
  return el("div", { class: "perm" }, el("pre", { class: "perm-" + (shown.kind === "content" ? "content" : "json"),
    text: shown.text || "" }));
}

function questionText(q) {
  if (!q.permission) return el("div", { class: "qtext", text: q.question });
  return el("div", { class: "qtext permission" }, el("span", { class: "chip perm-chip", text: "permission" }),
    el("span", { text: " " + q.permission.title }), permissionBlock(q.permission));
}

function buildQuestion(q) {
  const options = q.options.map((o) => el("label", { class: "opt" },
    el("input", { type: q.input, name: "chosen", value: o }), o));
  const countdown = q.deadline_at ? el("span", { class: "chip countdown", "data-deadline": q.deadline_at,
    text: chip(q.deadline_at - (Date.now() / 1000 + hive.skew)) }) : null;
  return el("div", { class: "row question" + (q.permission ? " permission" : "") },
    el("div", { class: "line1" }, el("span", { class: "name", text: q.asker }), el("span", { class: "when", text: `#${q.id} · ${clock(q.asked_at)}` }),
      countdown, q.default ? el("span", { class: "chip", text: `default on expiry: ${q.default}` }) : null),
    questionText(q),
    el("div", { class: "line2" },
      el("form", { class: "answer", "data-action": `/answer-question/${q.id}` }, options,
        el("input", { name: "text", placeholder: q.permission ? "reason (optional)" : "free text", autocomplete: "off" }),
        el("button", { type: "submit", text: "answer", "data-done": `answer #${q.id}` })),
      el("form", { class: "cancel", "data-action": `/cancel-question/${q.id}`,
        "data-confirm": `Cancel question #${q.id}? ${q.asker} will see the answer "[cancelled]".` },
      el("button", { type: "submit", class: "danger", text: "cancel", "data-done": `cancel #${q.id}` }))));
}

// Tools granted "from now on", each with its revoke button.
function renderGrants(grants) {
  const section = document.getElementById("questions");
  let box = section.querySelector(".grants");
  if (!box) {
    box = el("div", { class: "grants" });
    section.querySelector("details.older").before(box);
  }
  box.replaceChildren(...(grants || []).map((g) => el("div", { class: "row grant", "data-agent": g.agent },
    el("span", { class: "name", text: g.agent }), el("span", { class: "when", text: "may run without asking:" }),
    ...g.tools.map((t) => el("span", { class: "chip tool" }, el("span", { class: "mono", text: t + " " }),
      el("button", { type: "button", class: "danger small", text: "revoke", "data-post": `/revoke-tool/${g.agent}?tool=${encodeURIComponent(t)}`,
        "data-done": `revoke ${t} from ${g.agent}`, "data-confirm": `Revoke ${t} from ${g.agent}? Its next ${t} call asks again.` }))))));
}

function renderQuestions(qs) {
  const box = document.querySelector("#questions .rows");
  renderRows(box, qs.pending, (q) => q.id, buildQuestion);
  empty(box, qs.pending, "no pending questions");
  setCount("questions", qs.pending.length);
  renderGrants(qs.grants);
  const section = document.getElementById("questions");
  if (qs.pending.length === 0) section.classList.remove("pulsing");
  else if (!hive.initial && qs.pending.some((q) => !hive.seenQuestions.has(q.id))) section.classList.add("pulsing");
  qs.pending.forEach((q) => hive.seenQuestions.add(q.id));
  renderRows(document.querySelector("#questions .resolved"), qs.resolved, (q) => q.id, (q) => el("div", { class: "row" },
    el("div", { class: "line1" }, el("span", { class: "name", text: q.asker }),
      el("span", { class: "qtext", text: q.permission ? q.permission.title : q.question }),
      el("span", { class: "chip", text: q.how }), el("span", { class: "when", text: clock(q.answered_at) })),
    el("div", { class: "body", text: q.answer || "" })));
}
hive.seenQuestions = new Set();

// --- operator inbox -------------------------------------------------------------
function renderInbox(inbox) {
  const box = document.querySelector("#inbox .rows");
  renderRows(box, inbox.messages, (m) => m.id, (m) => el("div", { class: "row message" + (m.unread ? " unread" : "") },
    el("div", { class: "line1" }, el("span", { class: "name", text: m.from }), el("span", { class: "when", text: clock(m.sent_at) })),
    el("div", { class: "body", text: m.body })), (node, m) => node.classList.toggle("unread", m.unread));
  empty(box, inbox.messages, "nothing for the operator yet");
  const badge = document.querySelector("#inbox .badge.unread");
  const before = Number(badge.textContent || 0);
  badge.hidden = inbox.unread === 0;
  badge.textContent = inbox.unread ? String(inbox.unread) : "";
  if (inbox.unread === 0) badge.classList.remove("pulsing");
  else if (!hive.initial && inbox.unread > before) badge.classList.add("pulsing");
}

// --- approvals ----------------------------------------------------------------
function approvalDetails(a) {
  const parts = [];
  if (a.kind === "spawn") {
    parts.push(el("pre", { class: "diff", text: JSON.stringify(a.config || {}, null, 2) }));
    if (a.prompt) parts.push(el("div", { class: "body", text: a.prompt }));
  } else if (a.diff_html) {
    const d = el("div", { class: "diffbox" });
    d.innerHTML = a.diff_html;  // escaped line by line by the server (config_repo.diff_html)
    parts.push(d);
  }
  return parts;
}

function renderApprovals(aps) {
  const box = document.querySelector("#approvals .rows");
  renderRows(box, aps.pending, (a) => a.id, (a) => el("div", { class: "row approval" + (a.status === "applying" ? " busy" : "") },
    el("div", { class: "line1" }, el("span", { class: "name", text: a.title }),
      el("span", { class: "when", text: `#${a.id} · by ${a.requested_by} · ${clock(a.requested_at)}` }),
      a.status === "applying" ? el("span", { class: "pill pending", text: "◐ applying…" }) : null),
    approvalDetails(a),
    el("div", { class: "line2" },
      el("form", { "data-action": `/approve/${a.id}` }, el("button", { type: "submit", text: "approve", "data-done": `approve #${a.id}` })),
      el("form", { "data-action": `/deny/${a.id}` }, el("input", { name: "reason", placeholder: "reason (optional)" }),
        el("button", { type: "submit", class: "danger", text: "deny", "data-done": `deny #${a.id}` })))));
  empty(box, aps.pending, "nothing waits for approval");
  setCount("approvals", aps.pending.length);
  renderRows(document.querySelector("#approvals .decided"), aps.decided, (a) => a.id, (a) => el("div", { class: "row" },
    el("div", { class: "line1" }, el("span", { class: "name", text: a.title }), el("span", { class: "chip", text: a.status }),
      el("span", { class: "when", text: clock(a.decided_at) }), a.reason ? el("span", { class: "meta", text: a.reason }) : null)));
}

// --- message flow ----------------------------------------------------------------
function renderFlow(flow) {
  const box = document.querySelector("#flow .rows");
  renderRows(box, flow, (m) => m.id, (m) => el("div", { class: "row flow" },
    el("div", { class: "line1" }, el("span", { class: "name", text: m.from }), el("span", { class: "arrow", text: "→" }),
      el("span", { class: "name", text: m.to }), el("span", { class: "when", text: clock(m.sent_at) })),
    el("div", { class: "body", text: m.body })));
  empty(box, flow, "no messages yet");
}

function renderStorage(s) {  // issue 16: the store cannot be written; sends are refused, never acknowledged
  const box = document.getElementById("storage");
  const failing = s && s.failing;
  box.hidden = !failing;
  box.textContent = failing ? `hive.sqlite cannot be written (${failing}): every send is refused ` +
    "(storage_unavailable) and none is acknowledged until it can; the daemon recovers by itself." : "";
}

const RENDER = { containers: renderContainers, tombstones: renderTombstones, questions: renderQuestions,
  inbox: renderInbox, approvals: renderApprovals, flow: renderFlow, fleet: renderFleet, storage: renderStorage };

hive.last = {};

function apply(sections) {
  hive.state = Object.assign(hive.state || {}, sections);
  for (const [name, render] of Object.entries(RENDER)) {
    if (!(name in sections)) continue;
    const text = JSON.stringify(sections[name]);
    if (text === hive.last[name]) continue;  // a heartbeat that found nothing new
    hive.last[name] = text;
    render(sections[name]);
  }
}

function applyRows(rows) {  // single container rows from a state change
  const list = (hive.state && hive.state.containers) ? hive.state.containers.slice() : [];
  for (const row of rows) {
    const i = list.findIndex((c) => c.name === row.name);
    if (i >= 0) list[i] = row; else list.push(row);
  }
  apply({ containers: list });
}

function applySnapshot(state) {
  hive.skew = state.now - Date.now() / 1000;
  apply(state);
  hive.initial = false;
}

function onPush(ev) {
  const msg = JSON.parse(ev.data);
  if (msg.type === "snapshot") applySnapshot(msg.state);
  else if (msg.type === "patch") {
    apply(msg.sections || {});
    if (msg.rows) applyRows(msg.rows);
    hive.pushes.push({ at: msg.at, received: Date.now() / 1000 });
    if (hive.pushes.length > 200) hive.pushes.shift();
  }
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  hive.ws = ws;
  const conn = document.getElementById("conn");
  ws.onopen = () => { conn.textContent = "live"; conn.classList.add("live"); };
  ws.onmessage = onPush;
  ws.onclose = () => {
    if (hive.loggedOut) return;
    conn.textContent = "reconnecting…"; conn.classList.remove("live");
    setTimeout(connect, 1000);
  };
}

async function refetch() {  // F33's fallback heartbeat
  try {
    const res = await fetch("/api/state", { credentials: "same-origin" });
    if (res.status === 401) { loggedOut(); return; }
    if (hive.loggedOut) { location.reload(); return; }  // logged in again elsewhere: a new session's token
    const data = await res.json();
    if (data.ok) applySnapshot(data.state);
  } catch (e) { /* the next beat retries */ }
}

setInterval(() => {  // countdown chips tick
  const now = Date.now() / 1000 + hive.skew;
  for (const c of document.querySelectorAll(".countdown[data-deadline]")) {
    c.textContent = chip(Number(c.dataset.deadline) - now);
  }
}, 1000);

connect();
setInterval(refetch, 5000);
