"""`hive`: the daemon, the harness, the MCP server, and every operator verb
(each a request on the admin socket, F24), `usage` included (issue 15).

The global flags (`--state-dir`) come from the declared settings and work
before the verb and after it (`hive --state-dir X ls`, `hive ls --state-dir X`),
on every verb but `harness`, whose own `--state-dir` is the agent's. A
`StartupError` (`hive serve` cannot start as configured) is one line on
stderr and exit status 1; a refused request is exit status 2.

`hive send` makes one idempotency key per invocation and, when the connection
is lost before the answer, sends again once with that key (issue 16): the
message is stored once either way."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hyperhive import cli_gate, client, settings
from hyperhive.cli_gate import say
from hyperhive.cli_ls import format_ls
from hyperhive.cli_usage import format_usage
from hyperhive.errors import ConnectFailed, ConnectionLost, HiveError, StartupError
from hyperhive.logs import terminal_safe
from hyperhive.paths import StatePaths
from hyperhive.wire_requests import new_idempotency_key

__all__ = ["main"]


class _Verbs:
    """`add_subparsers`' `add_parser`, each verb with the global flags as well."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub, self._common = sub, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._sub.add_parser(name, parents=[self._common], **kwargs)
        return parser


def _parser() -> argparse.ArgumentParser:
    common = settings.global_parser()
    p = argparse.ArgumentParser(prog="hive", description="hyperhive: a host daemon for a swarm of agents",
                                parents=[common])
    raw = p.add_subparsers(dest="cmd", required=True)
    sub = _Verbs(raw, common)

    serve = sub.add_parser("serve", help="run the host daemon")
    settings.add_arguments(serve)

    h = raw.add_parser("harness", help="run one agent's turn loop (started by the backend)")
    h.add_argument("--name", required=True)
    h.add_argument("--socket", required=True)
    h.add_argument("--state-dir", dest="agent_state", required=True)
    h.add_argument("--driver", default="builtin", choices=("builtin", "claude"))
    h.add_argument("--web-port", type=int, default=0,
                   help="the agent web UI's port on 127.0.0.1 (0: any free port; -1: no web UI); "
                        "the bound port is written to <state>/web.port")
    h.add_argument("--web-socket", default=None,
                   help="serve the web UI on this unix socket instead of a TCP port (the daemon relays it)")
    h.add_argument("--workspace", default=None, help="the agent's workspace (the builtin driver's `run` dir)")
    h.add_argument("--applied-dir", default=None,
                   help="the agent's applied config dir (its agent.json); default: <state>/../../../applied/<name>")
    h.add_argument("--api-socket", default=None,
                   help="the daemon's model-API gateway; relayed on loopback as ANTHROPIC_BASE_URL")
    h.add_argument("--proxy-socket", default=None,
                   help="the daemon's egress proxy; relayed on loopback as HTTP(S)_PROXY")
    h.add_argument("--bridge-ports", choices=("fixed", "any"), default="any",
                   help="fixed: the relays take 127.0.0.1:8787 and :3128 (the sandbox's own network); "
                        "any: free ports")
    h.add_argument("--sandboxed", action="store_true",
                   help="the harness runs in its sandbox (the builtin driver's `run` is allowed)")

    m = sub.add_parser("mcp", help="stdio MCP server for an agent's tools")
    m.add_argument("--socket", required=True)

    ls = sub.add_parser("ls", help="list containers")
    ls.add_argument("--json", action="store_true")
    us = sub.add_parser("usage", help="tokens, cost, calls and turns per agent, and the fleet's total")
    us.add_argument("--since", default="24h", metavar="WINDOW",
                    help="24h, 7d (a whole number of hours or days), or all (default: 24h)")
    us.add_argument("--json", action="store_true")
    for verb, helptext in (("spawn", "create an agent and start it"), ("start", "start a container"),
                           ("stop", "stop a container")):
        sp = sub.add_parser(verb, help=helptext)
        sp.add_argument("name")
        if verb == "spawn":
            sp.add_argument("--allow", action="append", metavar="NAME",
                            help="restrict whom the agent may message (repeatable; default: anyone)")
            sp.add_argument("--repo", metavar="PATH",
                            help="give the agent its own clone of this git repository, on branch hive/NAME")
            sp.add_argument("--permissions", choices=("sandbox", "ask", "allowlist"),
                            help="claude driver: every tool inside the sandbox (sandbox), each tool call asked "
                            "of the operator (ask), or allowed_tools only (allowlist)")
            sp.add_argument("--budget-usd", type=float, metavar="USD",
                            help="the agent's budget in dollars: past it, it starts no turn until the operator "
                            "raises it")
            sp.add_argument("--budget-per", choices=("day", "week", "total"), help="the budget's window "
                            "(default: day)")
            sp.add_argument("--cpus", metavar="N", help="ray backend: CPUs the agent's node must give it")
            sp.add_argument("--memory-mb", metavar="N", help="ray backend: memory (MB) its node must give it")
            sp.add_argument("--resources", metavar="KEY=VALUE[,...]",
                            help="ray backend: custom resources its node must give it, e.g. pool=1,GPU=1")
    pl = sub.add_parser("pull", help="fetch an agent's branch hive/NAME into the operator's repository now")
    pl.add_argument("name")
    pl.add_argument("--json", action="store_true")
    snd = sub.add_parser("send", help="send a message as the operator")
    snd.add_argument("name")
    snd.add_argument("text", nargs="+")
    cli_gate.add_parsers(sub)
    ib = sub.add_parser("inbox", help="the operator's inbox")
    ib.add_argument("--json", action="store_true")
    ib.add_argument("--limit", type=int, default=50, help="the newest N messages (default: 50)")
    sub.add_parser("url", help="print the dashboard's login URL (it carries the operator token: keep it to yourself)")
    lg = sub.add_parser("logs", help="a container's log (its harness, or the whole machine)")
    lg.add_argument("name")
    lg.add_argument("--lines", type=int, default=200, help="last N lines, at most 5000 (default: 200)")
    lg.add_argument("--unit", choices=("harness", "machine"), default="harness",
                    help="the harness service (default) or the whole machine journal")
    return p


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


ADMIN_TIMEOUT = 960.0  # past the daemon's own lifecycle bound (a nixos build)


def _admin(ns: argparse.Namespace, op: str, **fields: Any) -> dict[str, Any]:
    return client.request(StatePaths(Path(ns.state_dir).absolute()).admin_socket, op, timeout=ADMIN_TIMEOUT,
                          **fields)


SEND_RECONNECT = 10.0  # after a lost connection, how long the one retry waits for the daemon to listen again


def _send(ns: argparse.Namespace) -> dict[str, Any]:
    """The operator's send under this invocation's key; once more with the same
    key after a lost connection (waiting up to SEND_RECONNECT for the daemon)."""
    fields = {"to": ns.name, "body": " ".join(ns.text), "idempotency_key": new_idempotency_key("cli")}
    try:
        return _admin(ns, "send", **fields)
    except ConnectionLost:
        pass
    end, delay = time.monotonic() + SEND_RECONNECT, 0.25
    while True:
        try:
            return _admin(ns, "send", **fields)
        except ConnectFailed:  # not listening again yet: nothing was sent
            if time.monotonic() + delay > end:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        return _run(settings.fill_globals(ns))
    except StartupError as exc:  # `hive serve` cannot start as configured: say what, no traceback
        print(terminal_safe(f"hive: {exc.message}"), file=sys.stderr)
        return 1
    except HiveError as exc:
        print(terminal_safe(f"hive: {exc.code}: {exc.message}"), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(terminal_safe(f"hive: {exc}"), file=sys.stderr)
        return 2


def _run(ns: argparse.Namespace) -> int:
    if ns.cmd == "serve":
        from hyperhive.daemon import serve
        return serve(settings.from_args(ns))
    if ns.cmd == "harness":
        import hyperhive.logs as logs
        from hyperhive.harness.loop import run_harness
        logs.configure(sys.stderr)  # no death signal with the daemon: it outlives a restart (issue 16)
        from hyperhive.harness.loop import HarnessOptions, limit_files
        if ns.sandboxed:
            limit_files()
        web_port = None if ns.web_port < 0 else ns.web_port
        opts = HarnessOptions(
            web_socket=ns.web_socket, workspace=Path(ns.workspace) if ns.workspace else None,
            api_socket=ns.api_socket, proxy_socket=ns.proxy_socket, fixed_ports=ns.bridge_ports == "fixed",
            sandboxed=ns.sandboxed, applied_dir=Path(ns.applied_dir) if ns.applied_dir else None)
        asyncio.run(run_harness(ns.name, ns.socket, Path(ns.agent_state), ns.driver, web_port, options=opts))
        return 0
    if ns.cmd == "mcp":  # `python -m hyperhive mcp` gets here without importing this module
        from hyperhive.mcp_pipe import main as pipe
        return pipe(["mcp", "--socket", ns.socket])
    if ns.cmd == "ls":
        containers = _admin(ns, "ls")["containers"]  # every container: ls takes no --limit
        if ns.json:
            print(json.dumps(containers, indent=2))
        else:
            say(format_ls(containers))
        return 0
    if ns.cmd == "usage":
        reply = {k: v for k, v in _admin(ns, "usage", since=ns.since).items() if k not in ("id", "ok")}
        if ns.json:
            print(json.dumps(reply, indent=2))
        else:
            say(format_usage(reply))
        return 0
    if ns.cmd in ("spawn", "start", "stop"):
        extra: dict[str, Any] = {"allowed_recipients": ns.allow} if ns.cmd == "spawn" and ns.allow else {}
        if ns.cmd == "spawn" and ns.repo:  # the daemon's cwd is not the operator's: an absolute path
            extra["repo"] = os.path.abspath(ns.repo)
        if ns.cmd == "spawn":
            extra.update({k: v for k, v in (("permissions", ns.permissions), ("budget_usd", ns.budget_usd),
                                            ("budget_per", ns.budget_per), ("cpus", ns.cpus),
                                            ("memory_mb", ns.memory_mb), ("resources", ns.resources))
                           if v is not None})
        c = _admin(ns, ns.cmd, name=ns.name, **extra)["container"]
        say(f"{c['name']}: {c['state']}")
        return 0
    if ns.cmd == "pull":
        r = _admin(ns, "pull", name=ns.name)
        if ns.json:
            print(json.dumps({k: r.get(k) for k in ("name", "branch", "commit", "ahead")}, indent=2))
        elif r["commit"] is None:
            say(f"{r['name']}: {r['branch']} has no commit yet")
        else:
            say(f"{r['name']}: {r['branch']} at {r['commit'][:12]}, {r['ahead']} ahead of HEAD")
        return 0
    if ns.cmd == "send":
        resp = _send(ns)
        again = " (already sent: this retry stored nothing)" if resp.get("duplicate") else ""
        say(f"sent #{resp['message_id']} to {ns.name}{again}")
        return 0
    if ns.cmd in cli_gate.VERBS:
        return cli_gate.run(ns, lambda op, **f: _admin(ns, op, **f))
    if ns.cmd == "inbox":
        return cli_gate.show_list(_admin(ns, "inbox", limit=ns.limit), ns, "messages", "(inbox empty)",
                                  lambda m: say(f"#{m['id']} {_fmt_time(m['sent_at'])} {m['from']}: {m['body']}"))
    if ns.cmd == "url":
        from hyperhive.web.dashboard.access import URL_FILE
        f = Path(ns.state_dir).absolute() / "run" / URL_FILE
        try:
            say(f.read_text().strip())
        except FileNotFoundError:
            print(terminal_safe(f"hive: no {f}: is the daemon running?"), file=sys.stderr)
            return 2
        return 0
    if ns.cmd == "logs":
        resp = _admin(ns, "journal", name=ns.name, unit="" if ns.unit == "machine" else "harness",
                      lines=ns.lines)
        sys.stdout.write(terminal_safe(resp["text"], keep="\n\t"))  # an agent writes its own log lines
        return 0
    raise AssertionError(ns.cmd)
