"""The ops of the admin socket (the CLI's). Whoever reaches it is the operator."""

from __future__ import annotations

import asyncio
from typing import Any

from hyperhive.actors.bridge import call
from hyperhive.badges import agent_badges, env_login
from hyperhive.errors import BadRequest
from hyperhive.names import OPERATOR, AgentName, validate_name, validate_recipient
from hyperhive.paths import StatePaths
from hyperhive.web.dashboard.state import read_usage
from hyperhive.web.lifecycle import LIFECYCLE_TIMEOUT, lifecycle_action
from hyperhive.web.rpc.agent_ops import rows_out
from hyperhive.web.rpc.gate_ops import operator_gate_ops, spawn_config
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.web.rpc.ls_view import build_container_list
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.web.tables.sends import SendBatcher
from hyperhive.web.tables.turn_slots import TurnSlots
from hyperhive.wire import Inbox, Ls, Ping, Send, Spawn, Start, Stop

__all__ = ["admin_ops", "observe_ls"]


def observe_ls(snaps: list[dict[str, Any]], paths: StatePaths | None, backend: Any = None) -> list[dict[str, Any]]:
    """Each snapshot with its cgroup ``usage`` (``{memory_bytes, memory_peak_bytes,
    pids}``, or None when not running or without a cgroup) and, given ``paths``,
    its ``badges``. File reads: run it off the IOLoop."""
    usage = read_usage(getattr(backend, "usage", None), snaps)
    login = env_login() if paths is not None else False
    out = []
    for s in snaps:
        extra: dict[str, Any] = {"usage": usage.get(s["name"])}
        if paths is not None:
            extra["badges"] = agent_badges(paths, AgentName(s["name"]), str(s.get("driver") or ""),
                                           sandboxed=bool(s.get("sandboxed", True)), logged_in_by_env=login)
        out.append({**s, **extra})
    return out


def admin_ops(
    coordinator: Any, broker: Any, sends: SendBatcher, questions: Any, approvals: Any,
    beats: Heartbeats | None = None, slots: TurnSlots | None = None, paths: StatePaths | None = None,
    backend: Any = None,
) -> dict[str, Op]:
    async def ls(req: Ls) -> dict[str, Any]:
        snaps = await call(coordinator.ls)
        # Badges and cgroup usage in one executor job: file reads, off the loop.
        snaps = await asyncio.get_running_loop().run_in_executor(None, observe_ls, snaps, paths, backend)
        stats = await call(broker.stats)
        return {"containers": build_container_list(snaps, stats, beats, slots.queued if slots else ())}

    async def spawn(req: Spawn) -> dict[str, Any]:
        validate_name(req.name)
        config = spawn_config(req.allowed_recipients)
        return {"container": await call(coordinator.spawn, req.name, config, timeout=LIFECYCLE_TIMEOUT)}

    async def start(req: Start) -> dict[str, Any]:
        return {"container": await lifecycle_action(coordinator, "start", req.name, OPERATOR)}

    async def stop(req: Stop) -> dict[str, Any]:
        return {"container": await lifecycle_action(coordinator, "stop", req.name, OPERATOR)}

    async def send(req: Send) -> dict[str, Any]:
        to = validate_recipient(req.to)
        return {"message_id": await sends.send(OPERATOR, to, req.body)}

    async def inbox(req: Inbox) -> dict[str, Any]:
        if req.limit < 1:
            raise BadRequest(f"limit must be >= 1, got {req.limit}")
        rows = await call(broker.recent, OPERATOR, req.limit)
        await call(broker.mark_read, OPERATOR)
        return {"messages": rows_out(rows)}

    async def ping(req: Ping) -> dict[str, Any]:
        return {"agent": OPERATOR}

    return {
        "ls": Op(ls), "spawn": Op(spawn), "start": Op(start), "stop": Op(stop),
        "send": Op(send), "inbox": Op(inbox), "ping": Op(ping),
        **operator_gate_ops(coordinator, questions, approvals),
    }
