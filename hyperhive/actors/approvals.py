"""The Approvals actor (F11–F13): spawns and config changes wait here for the
operator's yes.

- ``request_spawn`` (the manager's tool, the operator's spawn form) queues a
  spawn with an optional initial config and prompt. Approving creates the
  agent through the Coordinator, starts it and kicks it.
- ``request_apply_commit`` queues a commit of the agent's config repo: its
  files are read once (each object checked against its id, see config_repo)
  and kept in the approval with the diff from the applied tree
  to them, stored as HTML. Approving writes exactly those kept files into
  ``applied/<name>/`` (the repo is not read again: what was shown is what is
  applied) and rebuilds the container (which kicks the agent). An approval
  queued before the files were kept cannot be applied: it fails, asking for
  a new request.
- Every outcome (approved, denied, failed) goes to the manager's inbox as
  ``ApprovalResolved``.

The Coordinator's work is awaited without blocking this actor: its reply
future's done-callback tells ``_finish`` here.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive import config_repo
from hyperhive.actors.bridge import Reply, answer, claim, fail, resolve
from hyperhive.actors.events import ApprovalQueued, ApprovalResolved, Hub
from hyperhive.errors import BadRequest, Conflict, HiveError, Internal, UnknownAgent, UnknownId
from hyperhive.names import MANAGER, SYSTEM, AgentName, validate_name, validate_spawnable
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.store.models import Approval, Container

__all__ = ["Approvals", "approval_view"]

_log = logs.get("hyperhive.approvals")
RECENT_DECIDED = 20
MAX_PROMPT = 64 * 1024


def approval_view(a: Any) -> dict[str, Any]:
    return {
        "id": a.id, "kind": a.kind, "agent": a.agent, "requested_by": a.requested_by,
        "requested_at": a.requested_at, "config": json.loads(a.config) if a.config else None,
        "prompt": a.prompt, "commit": a.commit, "diff_html": a.diff_html, "status": a.status,
        "decided_at": a.decided_at, "reason": a.reason,
    }


class Approvals(pykka.ThreadingActor):
    def __init__(self, paths: StatePaths, coordinator: Any, broker: Any, hub: Hub) -> None:
        super().__init__()
        self._paths = paths
        self._coordinator = coordinator
        self._broker = broker
        self._hub = hub
        self._busy: set[int] = set()  # approvals whose action is running
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(actor="approvals")

    # --- requests ----------------------------------------------------------
    def request_spawn(
        self, requested_by: str, name: str, config: AgentConfig | None = None, prompt: str | None = None,
        reply: Reply | None = None,
    ) -> None:
        def run() -> int:
            agent = validate_spawnable(name)
            if Container.get_or_none(Container.name == agent) is not None:
                raise Conflict(f"agent {agent} already exists")
            if self._paths.agent(agent).exists():
                raise Conflict(f"{agent} has kept state; revive it (or purge it first)")
            self._refuse_duplicate(agent)
            if prompt is not None and len(prompt) > MAX_PROMPT:
                raise BadRequest(f"prompt is over {MAX_PROMPT} characters")
            return self._queue(kind="spawn", agent=agent, requested_by=requested_by,
                               config=(config or AgentConfig()).to_json(), prompt=prompt)
        answer(reply, run)

    def request_revive(self, requested_by: str, name: str, reply: Reply | None = None) -> None:
        """F18: a spawn approval that brings a tombstone back with its kept
        config, prompt and credentials (spawn keeps whatever is on disk)."""
        def run() -> int:
            agent = validate_spawnable(name)
            if Container.get_or_none(Container.name == agent) is not None:
                raise Conflict(f"agent {agent} is live; nothing to revive")
            if not self._paths.agent(agent).is_dir():
                raise UnknownAgent(f"no kept state for {agent!r}")
            kept = self._kept_config(agent)
            self._refuse_duplicate(agent)
            return self._queue(kind="spawn", agent=agent, requested_by=requested_by,
                               config=(kept or AgentConfig()).to_json(), reason="revive")
        answer(reply, run)

    def _kept_config(self, agent: AgentName) -> AgentConfig | None:
        """The config a revived agent will run with: its kept applied one, else
        (the spawn materializes HEAD then) HEAD's agent.json, read as every
        commit is (the work tree's file is never opened: it may be a link)."""
        if self._paths.applied(agent).is_dir():
            return self._paths.load_applied(agent)
        config_dir = self._paths.config_dir(agent)
        try:
            files = config_repo.commit_files(config_dir, config_repo.resolve_commit(config_dir, "HEAD"))
        except HiveError:
            return None
        text = files.get(config_repo.CONFIG_FILE)
        return None if text is None else AgentConfig.from_json(text, where=f"{agent}'s kept agent.json")

    def propose_config(
        self, requested_by: str, agent: str, message: str, prompt: str | None = None,
        agent_json: str | None = None, reply: Reply | None = None,
    ) -> None:
        """Commit a new prompt and/or agent.json to the agent's config repo for
        ``requested_by`` and queue its apply approval: the manager needs no file
        access to the repos (its container may not see them)."""
        def run() -> dict[str, Any]:
            name = validate_name(agent)
            if Container.get_or_none(Container.name == name) is None:
                raise UnknownAgent(f"no agent named {name}")
            files: dict[str, str] = {}
            if prompt is not None:
                if len(prompt) > MAX_PROMPT:
                    raise BadRequest(f"prompt is over {MAX_PROMPT} characters")
                files[config_repo.PROMPT_FILE] = prompt
            if agent_json is not None:
                files[config_repo.CONFIG_FILE] = AgentConfig.from_json(agent_json, where="agent_json").to_json()
            commit = config_repo.commit_change(self._paths.config_dir(name), files, message, requested_by)
            return {"commit": commit, "approval_id": self._queue_apply(requested_by, name, commit)}
        answer(reply, run)

    def request_apply_commit(self, requested_by: str, agent: str, commit: str, reply: Reply | None = None) -> None:
        def run() -> int:
            name = validate_name(agent)
            if Container.get_or_none(Container.name == name) is None:
                raise UnknownAgent(f"no agent named {name}")
            return self._queue_apply(requested_by, name, config_repo.resolve_commit(self._paths.config_dir(name),
                                                                                     commit))
        answer(reply, run)

    def _queue_apply(self, requested_by: str, name: AgentName, full: str) -> int:
        new = config_repo.commit_files(self._paths.config_dir(name), full)
        if config_repo.PROMPT_FILE not in new and config_repo.CONFIG_FILE not in new:
            raise BadRequest(f"commit {full[:12]} has neither agent.json nor {config_repo.PROMPT_FILE}")
        if config_repo.CONFIG_FILE in new:
            AgentConfig.from_json(new[config_repo.CONFIG_FILE], where=f"agent.json in {full[:12]}")
        old = config_repo.applied_files(self._paths.applied(name))
        return self._queue(kind="apply_commit", agent=name, requested_by=requested_by, commit=full,
                           diff_html=config_repo.diff_html(old, new), files_json=json.dumps(new, sort_keys=True))

    @staticmethod
    def _kept_files(a: Any) -> dict[str, str]:
        """The files an apply_commit approval showed, as it kept them."""
        if a.files_json is None:
            raise BadRequest(
                f"approval #{a.id} was queued by an older hyperhive that did not keep the files its diff "
                f"showed, so it cannot be applied: request it again (request_apply_commit {a.agent} "
                f"{(a.commit or '')[:12]}) and approve the new one")
        return config_repo.check_files(json.loads(a.files_json))

    # --- decisions -----------------------------------------------------------
    def approve(self, approval_id: int, reply: Reply | None = None) -> None:
        try:
            a = self._pending(approval_id)
            self._busy.add(a.id)
            done: cf.Future[Any] = cf.Future()
            done.add_done_callback(lambda f: self._me.finish.defer(a.id, f, reply))
            if a.kind == "spawn":
                cfg = AgentConfig.from_json(a.config or "{}", where="the requested config")
                self._coordinator.spawn.defer(a.agent, cfg, a.prompt, "spawned after the operator's approval",
                                              reply=done)
            else:
                name = validate_name(a.agent)
                config_repo.write_applied(self._kept_files(a), a.commit, self._paths.applied(name))
                self._coordinator.rebuild_agent.defer(name, reply=done)
        except Exception as exc:  # noqa: BLE001 - the caller hears of it; the actor lives
            if isinstance(exc, HiveError) and exc.code in ("unknown_id", "conflict"):
                if claim(reply):
                    fail(reply, exc)
                return
            _log.exception("approval.approve_failed", approval_id=approval_id)
            self._busy.discard(approval_id)
            self._decide(approval_id, "failed", f"{type(exc).__name__}: {exc}")
            if claim(reply):
                fail(reply, exc if isinstance(exc, HiveError) else Internal(str(exc)))

    def finish(self, approval_id: int, done: cf.Future[Any], reply: Reply | None) -> None:
        """The Coordinator finished an approved action."""
        try:
            self._busy.discard(approval_id)
            exc = done.exception()
            if exc is None:
                view = self._decide(approval_id, "approved", None)
                if claim(reply):
                    resolve(reply, view)
            else:
                self._decide(approval_id, "failed", str(getattr(exc, "message", exc)))
                if claim(reply):
                    fail(reply, exc if isinstance(exc, HiveError) else Internal(str(exc)))
        except Exception as exc:  # noqa: BLE001
            _log.exception("approval.finish_failed", approval_id=approval_id)
            fail(reply, Internal(str(exc)))

    def deny(self, approval_id: int, reason: str | None = None, reply: Reply | None = None) -> None:
        def run() -> dict[str, Any]:
            a = self._pending(approval_id)
            return self._decide(a.id, "denied", reason or None)
        answer(reply, run)

    def list(self, reply: Reply | None = None) -> None:
        def run() -> dict[str, list[dict[str, Any]]]:
            pending = Approval.select().where(Approval.status == "pending").order_by(Approval.id)
            decided = (Approval.select().where(Approval.status != "pending")
                       .order_by(Approval.id.desc()).limit(RECENT_DECIDED))
            return {"pending": [self._view(a) for a in pending], "decided": [approval_view(a) for a in decided]}
        answer(reply, run)

    # --- internals -----------------------------------------------------------
    def _view(self, a: Any) -> dict[str, Any]:
        v = approval_view(a)
        if a.id in self._busy:
            v["status"] = "applying"
        return v

    def _refuse_duplicate(self, agent: str) -> None:
        dup = Approval.get_or_none((Approval.kind == "spawn") & (Approval.agent == agent)
                                   & (Approval.status == "pending"))
        if dup is not None:
            raise Conflict(f"a spawn of {agent} already waits for approval (#{dup.id})")

    def _queue(self, **fields: Any) -> int:
        a = Approval.create(requested_at=time.time(), **fields)
        _log.info("approval.queued", approval_id=a.id, kind=a.kind, agent=a.agent, by=a.requested_by)
        self._hub.publish(ApprovalQueued(approval_view(a)))
        return int(a.id)

    def _pending(self, approval_id: int) -> Any:
        a = Approval.get_or_none(Approval.id == approval_id)
        if a is None:
            raise UnknownId(f"no approval #{approval_id}")
        if a.status != "pending" or a.id in self._busy:
            raise Conflict(f"approval #{a.id} is already {'being applied' if a.id in self._busy else a.status}")
        return a

    def _decide(self, approval_id: int, status: str, reason: str | None) -> dict[str, Any]:
        Approval.update(status=status, decided_at=time.time(), reason=reason).where(
            Approval.id == approval_id).execute()
        a = Approval.get_by_id(approval_id)
        event = {"event": "ApprovalResolved", "id": a.id, "kind": a.kind, "agent": a.agent,
                 "commit": a.commit, "outcome": status, "reason": reason}
        _log.info("approval.resolved", approval_id=a.id, outcome=status, reason=reason)
        self._broker.send.defer(SYSTEM, MANAGER, json.dumps(event))
        view = approval_view(a)
        self._hub.publish(ApprovalResolved(view))
        return view


class ApprovalsProxy(pykka.ActorProxy[Approvals]):
    """Typed proxy for Approvals."""
