"""Dashboard POST handlers: parse the form, call the operator service
(``hyperhive.web.operator``), write its reply. The checks and the reply
shapes are the service's, the same as the admin socket's.
The gate (`dash_handlers.gate_request`) has checked the session and its XSRF
token (or a Bearer token) before any of these runs (F46, issue 12)."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from hyperhive.names import OPERATOR
from hyperhive.paths import AgentConfig
from hyperhive.web.dashboard.handlers import Base, DashDeps
from hyperhive.web.operator import agents, gate, messages, permissions
from hyperhive.web.operator.checks import spawn_config
from hyperhive.web.operator.lifecycle import lifecycle_action
from hyperhive.web.operator.placement import form_placement

__all__ = ["ROUTES", "spawn_request_config"]


def _allowed_list(allowed: str) -> list[str] | None:
    """The spawn form's comma-separated allow list; empty is "anyone"."""
    names = [n.strip() for n in allowed.split(",") if n.strip()]
    return names or None


def spawn_request_config(driver: str, allowed: str) -> AgentConfig:
    """The spawn form's config: an optional driver and a comma-separated allow list (pure)."""
    return spawn_config(_allowed_list(allowed), driver or None)


class _Action(Base):
    """A dashboard POST. A path segment that is not UTF-8 (a lone surrogate's
    bytes) fails in tornado before ``post`` runs: answered with the same
    ``bad_request`` code as every other bad input, not ``http_400``."""

    def form(self, name: str) -> str:
        return self.get_body_argument(name, "") or ""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if status_code == 400 and isinstance(exc, tornado.web.HTTPError):  # never a gate refusal (401/403/421)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"ok": False, "error": {"code": "bad_request",
                                                           "message": exc.log_message or self._reason}}))
            return
        super().write_error(status_code, **kwargs)


class Lifecycle(_Action):
    """``POST /start|stop|restart|rebuild|kill/{name}``, all through lifecycle_action."""

    def initialize(self, deps: DashDeps, verb: str) -> None:  # type: ignore[override]
        super().initialize(deps)
        self.verb = verb

    async def post(self, name: str) -> None:
        await self.reply(lifecycle_action(self.deps.coordinator, self.verb, name, OPERATOR,
                                          backend=self.deps.backend))


_YES = ("1", "true", "on")


class Destroy(_Action):
    """``POST /destroy/{name}`` (``purge=1`` also removes its kept state; ``force=1``
    even work its clone holds that the operator's repo does not, issue 14)."""

    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            purge = self.form("purge") in _YES
            return await agents.destroy(self.deps.coordinator, name, purge, purge and self.form("force") in _YES)
        await self.reply(run())


class Revive(_Action):
    async def post(self, name: str) -> None:
        await self.reply(agents.revive(self.deps.approvals, name, backend=self.deps.backend))


class PurgeTombstone(_Action):
    """``POST /purge-tombstone/{name}`` (``force=1``: even work the operator's repo does not keep)."""

    async def post(self, name: str) -> None:
        await self.reply(agents.purge(self.deps.coordinator, name, self.form("force") in _YES))


class RequestSpawn(_Action):
    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            placement = form_placement(self.form("cpus"), self.form("memory_mb"), self.form("resources"))
            return await gate.request_spawn(
                self.deps.approvals, OPERATOR, self.form("name").strip(),
                _allowed_list(self.form("allowed_recipients")), self.form("driver").strip() or None,
                self.form("prompt").strip() or None, repo=self.form("repo").strip() or None,
                backend=self.deps.backend, placement=placement)
        await self.reply(run())


class Approve(_Action):
    async def post(self, raw: str) -> None:
        await self.reply(gate.approve(self.deps.approvals, raw, backend=self.deps.backend))


class Deny(_Action):
    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            return await gate.deny(self.deps.approvals, raw, self.form("reason"))
        await self.reply(run())


class AnswerQuestion(_Action):
    """F8: the checked options and the free text; the Questions actor merges them."""

    async def post(self, raw: str) -> None:
        async def run() -> dict[str, Any]:
            return await gate.answer(self.deps.questions, raw, self.get_body_arguments("chosen"), self.form("text"))
        await self.reply(run())


class CancelQuestion(_Action):
    async def post(self, raw: str) -> None:
        await self.reply(gate.cancel_question(self.deps.questions, raw))


class RevokeTool(_Action):
    """``POST /revoke-tool/{name}`` (``tool``): a tool granted "from now on" asks again (issue 14)."""

    async def post(self, name: str) -> None:
        async def run() -> dict[str, Any]:
            # The tool in the form or the query string (the row's button posts to /revoke-tool/NAME?tool=T).
            out = await permissions.revoke_tool(self.deps.questions, name, self.get_argument("tool", ""))
            if self.deps.touch is not None:
                self.deps.touch("questions")  # the grants are shown in the questions section
            return out
        await self.reply(run())


class Send(_Action):
    """F5: the operator may message any agent."""

    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            return await messages.send(self.deps.sends, self.form("to").strip(), self.form("body"))
        await self.reply(run())


class MarkRead(_Action):
    async def post(self) -> None:
        async def run() -> dict[str, Any]:
            out = await messages.mark_read(self.deps.broker)
            if self.deps.touch is not None:
                self.deps.touch("inbox")
            return out
        await self.reply(run())


_NAME = r"([^/]+)"  # any segment: the service's name check gives the clear error
_ID = r"([0-9]+)"
_BY_ID: tuple[tuple[str, type[Base]], ...] = (
    ("approve", Approve), ("deny", Deny), ("answer-question", AnswerQuestion), ("cancel-question", CancelQuestion))

ROUTES: list[tuple[str, type[Base], dict[str, Any]]] = [
    *((rf"/{verb}/{_NAME}", Lifecycle, {"verb": verb}) for verb in ("start", "stop", "restart", "rebuild", "kill")),
    (rf"/destroy/{_NAME}", Destroy, {}),
    (rf"/revive/{_NAME}", Revive, {}),
    (rf"/purge-tombstone/{_NAME}", PurgeTombstone, {}),
    (rf"/revoke-tool/{_NAME}", RevokeTool, {}),
    (r"/request-spawn", RequestSpawn, {}),
    *((rf"/{verb}/{_ID}", cls, {}) for verb, cls in _BY_ID),
    # Anything else where an id goes reaches the same handler, so the service
    # refuses it (bad_request) as the admin socket does, rather than a 404.
    *((rf"/{verb}/{_NAME}", cls, {}) for verb, cls in _BY_ID),
    (r"/send", Send, {}),
    (r"/inbox/read", MarkRead, {}),
]
