"""`hive` verbs of the operator's gate and the lifecycle beyond start/stop:
questions, answer, cancel-question, approvals, approve, deny, request-spawn,
restart, rebuild, kill, destroy, tombstones, revive, purge, and the tools an
agent was granted "from now on" (grants, revoke-tool). Each is one request on the admin socket (F24).

The listings carry the reply's ``more`` (rows the daemon left out; 0 when
it does not say) in their ``--json``; as text, a listing whose shown rows
were cut says ``(N more; --limit)`` (`show_list`; `hive inbox`). The
``more`` of questions and approvals counts resolved ones, which the text
does not list; tombstones are listed whole."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

from hyperhive.actors.questions_core import countdown_chip
from hyperhive.cli_ls import more_count, more_note
from hyperhive.logs import terminal_safe

__all__ = ["VERBS", "add_parsers", "run", "show_list"]

VERBS = ("questions", "answer", "cancel-question", "approvals", "approve", "deny", "request-spawn",
         "restart", "rebuild", "kill", "destroy", "tombstones", "revive", "purge", "grants", "revoke-tool")

Admin = Callable[..., dict[str, Any]]


def add_parsers(sub: Any) -> None:
    q = sub.add_parser("questions", help="the operator's pending questions")
    q.add_argument("--json", action="store_true")
    a = sub.add_parser("answer", help="answer a question: checked options and/or free text")
    a.add_argument("id", type=int)
    a.add_argument("text", nargs="*", help="free text (joined with spaces)")
    a.add_argument("--choose", action="append", default=[], metavar="OPTION",
                   help="check this option (repeatable with multi questions)")
    c = sub.add_parser("cancel-question", help="cancel a question; the manager gets [cancelled]")
    c.add_argument("id", type=int)
    ap = sub.add_parser("approvals", help="spawns and config changes waiting for approval")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--diff", action="store_true", help="print each config change's diff")
    ok = sub.add_parser("approve", help="approve a pending approval")
    ok.add_argument("id", type=int)
    no = sub.add_parser("deny", help="deny a pending approval; the manager is told")
    no.add_argument("id", type=int)
    no.add_argument("--reason")
    rs = sub.add_parser("request-spawn", help="queue a spawn for approval")
    rs.add_argument("name")
    rs.add_argument("--allow", action="append", metavar="NAME", help="whom it may message (repeatable)")
    rs.add_argument("--prompt", help="its initial prompt")
    rs.add_argument("--repo", metavar="PATH",
                    help="give the agent its own clone of this git repository, on branch hive/NAME")
    rs.add_argument("--cpus", metavar="N", help="ray backend: CPUs the agent's node must give it")
    rs.add_argument("--memory-mb", metavar="N", help="ray backend: memory (MB) its node must give it")
    rs.add_argument("--resources", metavar="KEY=VALUE[,...]",
                    help="ray backend: custom resources its node must give it, e.g. pool=1,GPU=1")
    for verb, text in (("restart", "restart a container (then kick the agent)"),
                       ("rebuild", "rebuild a container from its applied config (then kick)"),
                       ("kill", "kill a container at once; it stays stopped")):
        sub.add_parser(verb, help=text).add_argument("name")
    d = sub.add_parser("destroy", help="destroy a container; its state is kept unless --purge")
    d.add_argument("name")
    d.add_argument("--purge", action="store_true", help="also remove agents/<name> and applied/<name>")
    d.add_argument("--force", action="store_true",
                   help="with --purge: purge even commits the operator's repo lacks and uncommitted changes")
    t = sub.add_parser("tombstones", help="kept state dirs with no live container")
    t.add_argument("--json", action="store_true")
    sub.add_parser("revive", help="queue a spawn approval that brings kept state back").add_argument("name")
    p = sub.add_parser("purge", help="wipe a tombstone's state and applied dirs (refused while its workspace "
                                     "holds work the operator's repo lacks, unless --force)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="purge even unpulled commits and uncommitted changes")
    g = sub.add_parser("grants", help='the tools an agent was granted "from now on" (permissions: ask)')
    g.add_argument("name")
    g.add_argument("--json", action="store_true")
    rv = sub.add_parser("revoke-tool", help='take back a tool granted "from now on": its next call asks again')
    rv.add_argument("name")
    rv.add_argument("tool")


def say(text: str) -> None:
    """Print for a person: control and bidi characters (an agent may have put
    them in a body, a question, a name it chose) come out escaped, never raw
    into the terminal; line breaks stay."""
    print(terminal_safe(text, keep="\n"))  # noqa: T201 - the CLI's output


def show_list(reply: dict[str, Any], ns: argparse.Namespace, key: str, empty: str,
              row: Callable[[dict[str, Any]], None], cut: bool = True) -> int:
    """A listing verb's answer: with ``--json`` the reply itself, ``more``
    included (0 when the daemon does not say); else the ``key`` rows
    (``empty`` when none), then ``(N more; --limit)`` when ``cut`` (``more``
    counts rows of ``key``) and the daemon left some out."""
    out = {**reply, "more": more_count(reply)}
    if ns.json:
        print(json.dumps(out, indent=2))  # ASCII: C1 and bidi characters escaped too
        return 0
    if not out[key]:
        say(empty)
    for item in out[key]:
        row(item)
    if cut and out["more"]:
        say(more_note(out))
    return 0


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def _print_question(q: dict[str, Any], now: float) -> None:
    chip = "" if q["deadline_at"] is None else "  " + countdown_chip(q["deadline_at"] - now)
    kind = " (several)" if q["multi"] else ""
    say(f"#{q['id']} {_when(q['asked_at'])} {q['asker']}{chip}: {q['question']}")
    if q["options"]:
        say(f"    options{kind}: " + " | ".join(q["options"]))
    if q["default"] is not None:
        say(f"    on expiry: {q['default']}")


def _placement_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """--cpus/--memory-mb/--resources as typed → request_spawn's fields (as agent.json's placement)."""
    if ns.cpus is None and ns.memory_mb is None and ns.resources is None:
        return {}
    from hyperhive.errors import BadRequest
    from hyperhive.placement import parse_placement_flags
    try:
        return parse_placement_flags(ns.cpus, ns.memory_mb, ns.resources).to_json()
    except BadRequest as exc:
        raise SystemExit(f"hive request-spawn: {exc.message}") from None


def _print_approval(a: dict[str, Any], diff: bool) -> None:
    what = f"spawn {a['agent']}" if a["kind"] == "spawn" else f"apply {a['commit'][:12]} to {a['agent']}"
    placement = (a.get("config") or {}).get("placement")
    if placement:  # issue 18: where the approved agent will run is part of what is approved
        what += " placed " + json.dumps(placement, sort_keys=True)
    say(f"#{a['id']} {_when(a['requested_at'])} {a['requested_by']}: {what} [{a['status']}]")
    if diff and a["diff_html"]:
        import html
        import re
        say(html.unescape(re.sub(r"<[^>]+>", "", a["diff_html"])))


def _print_tombstone(t: dict[str, Any]) -> None:
    creds = "credentials kept" if t["credentials_kept"] else "no credentials"
    age = t["age_seconds"] / 3600
    say(f"{t['name']}  {t['size_bytes'] / 1024:.0f} KiB  modified {age:.1f} h ago  {creds}")


def run(ns: argparse.Namespace, admin: Admin) -> int:
    cmd = ns.cmd
    if cmd == "questions":
        now = time.time()
        return show_list(admin("questions"), ns, "pending", "(no pending questions)",
                         lambda q: _print_question(q, now), cut=False)  # its `more`: resolved ones
    if cmd in ("answer", "cancel-question"):
        if cmd == "answer":
            q = admin("answer", question_id=ns.id, chosen=ns.choose, text=" ".join(ns.text))["question"]
        else:
            q = admin("cancel_question", question_id=ns.id)["question"]
        say(f"#{q['id']} {q['how']}: {q['answer']}")
        return 0
    if cmd == "approvals":
        return show_list(admin("approvals"), ns, "pending", "(no pending approvals)",
                         lambda a: _print_approval(a, ns.diff), cut=False)  # its `more`: decided ones
    if cmd in ("approve", "deny"):
        fields: dict[str, Any] = {"approval_id": ns.id}
        if cmd == "deny" and ns.reason:
            fields["reason"] = ns.reason
        a = admin(cmd, **fields)["approval"]
        say(f"#{a['id']} {a['status']}" + (f": {a['reason']}" if a.get("reason") else ""))
        return 0
    if cmd == "request-spawn":
        extra: dict[str, Any] = {}
        if ns.allow:
            extra["allowed_recipients"] = ns.allow
        if ns.prompt is not None:
            extra["prompt"] = ns.prompt
        if ns.repo:  # the daemon's cwd is not the operator's: an absolute path
            extra["repo"] = os.path.abspath(ns.repo)
        extra.update(_placement_fields(ns))
        say(f"approval #{admin('request_spawn', name=ns.name, **extra)['approval_id']} queued")
        return 0
    if cmd in ("restart", "rebuild", "kill"):
        c = admin(cmd, name=ns.name)["container"]
        say(f"{c['name']}: {c['state']}")
        return 0
    if cmd == "destroy":
        if ns.force and not ns.purge:
            raise SystemExit("hive destroy: --force goes with --purge")
        c = admin("destroy", name=ns.name, purge=ns.purge, **({"force": True} if ns.force else {}))["container"]
        say(f"{c['name']}: destroyed" + (" and purged" if c["purged"] else " (state kept)"))
        return 0
    if cmd == "tombstones":
        return show_list(admin("tombstones"), ns, "tombstones", "(no kept state)", _print_tombstone,
                         cut=False)  # every one, no --limit
    if cmd == "revive":
        say(f"approval #{admin('revive', name=ns.name)['approval_id']} queued (revive {ns.name})")
        return 0
    if cmd == "purge":
        out = admin("purge", name=ns.name, **({"force": True} if ns.force else {}))
        say(f"{out['name']}: purged " + ", ".join(out["purged"]))
        return 0
    if cmd == "grants":
        g = admin("grants", name=ns.name)
        if ns.json:
            print(json.dumps({"agent": g["agent"], "tools": g["tools"]}, indent=2))
        else:
            say(f"{g['agent']}: " + (", ".join(g["tools"]) if g["tools"] else "(no tools granted)"))
        return 0
    if cmd == "revoke-tool":
        r = admin("revoke_tool", name=ns.name, tool=ns.tool)
        left = ", ".join(r["tools"]) if r["tools"] else "none"
        say(f"{r['agent']}: {r['tool']} " + ("revoked" if r["revoked"] else "was not granted") + f" (granted: {left})")
        return 0
    raise AssertionError(cmd)
