"""Dashboard POST handlers: parse the form, call the actor, write the result.
The gate (`dash_handlers.gate_request`) has checked the session and its XSRF
token (or a Bearer token) before any of these runs (F46, issue 12)."""

from __future__ import annotations

from typing import Any

from hyperhive.actors.bridge import call
from hyperhive.errors import BadRequest
from hyperhive.names import OPERATOR, validate_name, validate_recipient
from hyperhive.paths import AgentConfig
from hyperhive.web.dashboard.handlers import Base
from hyperhive.web.lifecycle import LIFECYCLE_TIMEOUT, lifecycle_action
from hyperhive.web.rpc.gate_ops import spawn_config

__all__ = ["ROUTES", "spawn_request_config"]

MAX_BODY = 64 * 1024
APPROVE_TIMEOUT = LIFECYCLE_TIMEOUT  # an approval spawns or rebuilds a container


def _int_id(raw: str) -> int:
    if not raw.isdigit():
        raise BadRequest(f"not an id: {raw!r}")
    return int(raw)


def spawn_request_config(driver: str, allowed: str) -> AgentConfig:
    """The spawn form's config: an optional driver and a comma-separated allow list (pure)."""
    names = [n.strip() for n in allowed.split(",") if n.strip()]
    return spawn_config(names or None, driver or None)


class Lifecycle(Base):
    """``POST /start|stop|restart|rebuild|kill/{name}``, all through lifecycle_action."""

    def initialize(self, deps: Any, verb: str) -> None:  # type: ignore[override]
        super().initialize(deps)
        self.verb = verb

    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            return {"container": await lifecycle_action(self.deps.coordinator, self.verb, name, OPERATOR)}  # type: ignore[arg-type]
        await self.reply(run())


class Destroy(Base):
    """``POST /destroy/{name}`` (``purge=1`` also removes its kept state)."""

    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            agent = validate_name(name)
            purge = self.get_body_argument("purge", "0") in ("1", "true", "on")
            out = await call(self.deps.coordinator.destroy_agent, agent, purge, timeout=LIFECYCLE_TIMEOUT)
            return {"destroyed": agent, "purged": purge, "result": out}
        await self.reply(run())


class Revive(Base):
    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            agent = validate_name(name)
            return {"approval_id": await call(self.deps.approvals.request_revive, OPERATOR, agent)}
        await self.reply(run())


class PurgeTombstone(Base):
    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            agent = validate_name(name)
            out = await call(self.deps.coordinator.purge_tombstone, agent, timeout=LIFECYCLE_TIMEOUT)
            return {"purged": agent, "result": out}
        await self.reply(run())


class RequestSpawn(Base):
    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            name = self.get_body_argument("name", "").strip()
            prompt = self.get_body_argument("prompt", "").strip() or None
            cfg = spawn_request_config(self.get_body_argument("driver", "").strip(),
                                       self.get_body_argument("allowed_recipients", ""))
            return {"approval_id": await call(self.deps.approvals.request_spawn, OPERATOR, name, cfg, prompt)}
        await self.reply(run())


class Approve(Base):
    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            return {"approval": await call(self.deps.approvals.approve, _int_id(raw), timeout=APPROVE_TIMEOUT)}
        await self.reply(run())


class Deny(Base):
    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            reason = self.get_body_argument("reason", "").strip() or None
            return {"approval": await call(self.deps.approvals.deny, _int_id(raw), reason)}
        await self.reply(run())


class AnswerQuestion(Base):
    """F8: the checked options and the free text; the Questions actor merges them."""

    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            chosen = self.get_body_arguments("chosen")
            text = self.get_body_argument("text", "")
            return {"question": await call(self.deps.questions.answer, _int_id(raw), chosen, text)}
        await self.reply(run())


class CancelQuestion(Base):
    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            return {"question": await call(self.deps.questions.cancel, _int_id(raw))}
        await self.reply(run())


class Send(Base):
    """F5: the operator may message any agent."""

    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            to = validate_recipient(self.get_body_argument("to", "").strip())
            body = self.get_body_argument("body", "")
            if not body.strip():
                raise BadRequest("the message is empty")
            if len(body) > MAX_BODY:
                raise BadRequest(f"the message is over {MAX_BODY} characters")
            return {"message_id": await self.deps.sends.send(OPERATOR, to, body)}
        await self.reply(run())


class MarkRead(Base):
    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            marked = await call(self.deps.broker.mark_read, OPERATOR)
            self.deps.touch("inbox")
            return {"marked": marked}
        await self.reply(run())


_NAME = r"([^/]+)"  # any segment: validate_name gives the clear error
_ID = r"([0-9]+)"

ROUTES: list[tuple[str, type[Base], dict[str, Any]]] = [
    *((rf"/{verb}/{_NAME}", Lifecycle, {"verb": verb}) for verb in ("start", "stop", "restart", "rebuild", "kill")),
    (rf"/destroy/{_NAME}", Destroy, {}),
    (rf"/revive/{_NAME}", Revive, {}),
    (rf"/purge-tombstone/{_NAME}", PurgeTombstone, {}),
    (r"/request-spawn", RequestSpawn, {}),
    (rf"/approve/{_ID}", Approve, {}),
    (rf"/deny/{_ID}", Deny, {}),
    (rf"/answer-question/{_ID}", AnswerQuestion, {}),
    (rf"/cancel-question/{_ID}", CancelQuestion, {}),
    (r"/send", Send, {}),
    (r"/inbox/read", MarkRead, {}),
]
