"""The Approvals actor (F11–F13): spawns and config changes wait here for the
operator's yes. Its rules live in ``approvals_core``; this shell holds the
I/O: the approvals rows, the config repos, the Coordinator, the Broker, the Hub.

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
future's done-callback tells ``finish`` here.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive import config_repo
from hyperhive.actors.approvals_core import KICK, RECENT_DECIDED, ApprovalRecord, ApprovalsCore, NewApproval, Outcome
from hyperhive.actors.bridge import Handle, Reply, answers, claim, fail, parks, resolve
from hyperhive.actors.broker import Broker
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import ApprovalQueued, ApprovalResolved, Hub
from hyperhive.errors import HiveError, Internal, UnknownId
from hyperhive.names import MANAGER, SYSTEM, AgentName, validate_name
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.store.models import Approval, Container

__all__ = ["Approvals"]

_log = logs.get("hyperhive.approvals")
View = dict[str, Any]


def _caller_error(exc: BaseException) -> HiveError:
    """What the approver hears of a failure: our own errors as they are."""
    return exc if isinstance(exc, HiveError) else Internal(str(exc))


class Approvals(pykka.ThreadingActor):
    def __init__(self, paths: StatePaths, coordinator: pykka.ActorProxy[Coordinator],
                 broker: pykka.ActorProxy[Broker], hub: Hub) -> None:
        super().__init__()
        self._paths = paths
        self._coordinator = Handle(coordinator)
        self._broker = Handle(broker)
        self._hub = hub
        self.core = ApprovalsCore()
        self._me: Handle[Approvals] | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="approvals")

    # --- requests ----------------------------------------------------------
    @answers
    def request_spawn(self, requested_by: str, name: str, config: AgentConfig | None = None,
                      prompt: str | None = None) -> int:
        agent = validate_name(name)
        return self._queue(self.core.spawn(
            requested_by, name, config, prompt, live=self._live(agent), kept=self._paths.agent(agent).exists(),
            waiting=self._waiting_spawn(agent), now=time.time()))

    @answers
    def request_revive(self, requested_by: str, name: str) -> int:
        """F18: a spawn approval that brings a tombstone back with its kept
        config, prompt and credentials (spawn keeps whatever is on disk)."""
        agent = self._revivable(name)
        kept = self._kept_config(agent)
        return self._queue(self.core.revive(requested_by, agent, kept, waiting=self._waiting_spawn(agent),
                                            now=time.time()))

    @answers
    def revive_config(self, name: str) -> AgentConfig | None:
        """The config a revive of ``name`` would run with (refused as
        ``request_revive`` refuses): so its placement can be checked first (issue 18)."""
        return self._kept_config(self._revivable(name))

    def _revivable(self, name: str) -> AgentName:
        agent = validate_name(name)
        return self.core.check_revive(name, live=self._live(agent), kept_dir=self._paths.agent(agent).is_dir())

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

    @answers
    def propose_config(self, requested_by: str, agent: str, message: str, prompt: str | None = None,
                       agent_json: str | None = None) -> dict[str, Any]:
        """Commit a new prompt and/or agent.json to the agent's config repo for
        ``requested_by`` and queue its apply approval: the manager needs no file
        access to the repos (its container may not see them)."""
        name = self.core.check_agent(agent, live=self._live(validate_name(agent)))
        files = self.core.config_files(prompt, agent_json)
        commit = config_repo.commit_change(self._paths.config_dir(name), files, message, requested_by)
        return {"commit": commit, "approval_id": self._queue_apply(requested_by, name, commit)}

    @answers
    def request_apply_commit(self, requested_by: str, agent: str, commit: str) -> int:
        name = self.core.check_agent(agent, live=self._live(validate_name(agent)))
        return self._queue_apply(requested_by, name, config_repo.resolve_commit(self._paths.config_dir(name), commit))

    @answers
    def commit_config(self, agent: str, commit: str) -> tuple[str, AgentConfig | None]:
        """A commit's full id and the agent.json it holds (None: it holds none), read
        as an apply reads it: so its placement can be checked before it is queued."""
        name = self.core.check_agent(agent, live=self._live(validate_name(agent)))
        full = config_repo.resolve_commit(self._paths.config_dir(name), commit)
        text = config_repo.commit_files(self._paths.config_dir(name), full).get(config_repo.CONFIG_FILE)
        return full, None if text is None else AgentConfig.from_json(text, where=f"agent.json in {full[:12]}")

    def _queue_apply(self, requested_by: str, name: AgentName, full: str) -> int:
        new = config_repo.commit_files(self._paths.config_dir(name), full)
        old = config_repo.applied_files(self._paths.applied(name))
        return self._queue(self.core.apply_commit(requested_by, name, full, new, old, now=time.time()))

    @answers
    def approval_config(self, approval_id: int) -> tuple[str, AgentConfig | None]:
        """How to name a pending approval and the config its approved work would run
        with, read now (issue 18: its placement is checked again before approve):
        a spawn's requested config, a revive's kept one (what the spawn finds on
        disk), an apply's agent.json (None: the commit has none). Unknown or
        decided: refused as ``approve`` refuses. A config that cannot be read is
        None here: ``approve`` fails the approval with its error, as before."""
        a = self.core.pending(self._record(approval_id), approval_id)
        revive = a.kind == "spawn" and a.reason == "revive"
        what = ("revive of" if revive else "spawn of") if a.kind == "spawn" else f"apply of {(a.commit or '')[:12]} to"
        where = f"approval #{a.id} ({what} {a.agent})"
        try:
            if revive:
                return f"{where}: its kept agent.json", self._kept_config(validate_name(a.agent))
            if a.kind == "spawn":
                return where, self.core.spawn_config(a)
            text = None if a.files_json is None else a.kept_files().get(config_repo.CONFIG_FILE)
            return where, None if text is None else AgentConfig.from_json(text, where=where)
        except HiveError:
            return where, None

    # --- decisions -----------------------------------------------------------
    @parks
    def approve(self, reply: Reply[View] | None, approval_id: int) -> None:
        """Hand the work to the Coordinator; ``finish`` answers when it is done.
        The caller's reply is claimed only then: a caller that gave up does not
        stop an approval the operator gave."""
        try:
            a = self.core.begin(self._record(approval_id), approval_id)
        except Exception as exc:  # noqa: BLE001 - unknown or already decided: nothing changes
            if claim(reply):
                fail(reply, _caller_error(exc))
            return
        try:
            done = self._start(a)
        except Exception as exc:  # noqa: BLE001 - the approval fails; the caller hears of it; the actor lives
            _log.exception("approval.approve_failed", approval_id=a.id)
            self._decide(a.id, *self.core.broke(a.id, exc))
            if claim(reply):
                fail(reply, _caller_error(exc))
            return
        me = self._me
        assert me is not None
        done.add_done_callback(lambda f: me.tell(Approvals.finish, a.id, f, reply))

    def _start(self, a: ApprovalRecord) -> cf.Future[Any]:
        if a.kind == "spawn":
            return self._coordinator.future(Coordinator.spawn, a.agent, self.core.spawn_config(a), a.prompt, KICK)
        name = validate_name(a.agent)
        config_repo.write_applied(a.kept_files(), a.commit or "", self._paths.applied(name))
        return self._coordinator.future(Coordinator.rebuild_agent, name)

    def finish(self, approval_id: int, done: cf.Future[Any], reply: Reply[View] | None) -> None:
        """The Coordinator finished an approved action (told by its done-callback)."""
        try:
            error = Internal("the work was cancelled") if done.cancelled() else done.exception()
            view = self._decide(approval_id, *self.core.finished(approval_id, error))
            if claim(reply):
                if error is None:
                    resolve(reply, view)
                else:
                    fail(reply, _caller_error(error))
        except Exception as exc:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("approval.finish_failed", approval_id=approval_id)
            fail(reply, Internal(str(exc)))

    @answers
    def deny(self, approval_id: int, reason: str | None = None) -> View:
        a = self.core.pending(self._record(approval_id), approval_id)
        return self._decide(a.id, "denied", reason or None)

    @answers
    def list(self) -> dict[str, list[View]]:
        pending = Approval.select().where(Approval.status == "pending").order_by(Approval.id)
        decided = (Approval.select().where(Approval.status != "pending")
                   .order_by(Approval.id.desc()).limit(RECENT_DECIDED))
        return self.core.listing([ApprovalRecord.of(a) for a in pending], [ApprovalRecord.of(a) for a in decided])

    # --- the store -----------------------------------------------------------
    @staticmethod
    def _live(agent: AgentName) -> bool:
        return Container.get_or_none(Container.name == agent) is not None

    @staticmethod
    def _waiting_spawn(agent: str) -> int | None:
        dup = Approval.get_or_none((Approval.kind == "spawn") & (Approval.agent == agent)
                                   & (Approval.status == "pending"))
        return None if dup is None else int(dup.id)

    @staticmethod
    def _record(approval_id: int) -> ApprovalRecord | None:
        a = Approval.get_or_none(Approval.id == approval_id)
        return None if a is None else ApprovalRecord.of(a)

    def _queue(self, new: NewApproval) -> int:
        a = ApprovalRecord.of(Approval.create(**new.fields()))
        _log.info("approval.queued", approval_id=a.id, kind=a.kind, agent=a.agent, by=a.requested_by)
        self._hub.publish(ApprovalQueued(a.view()))
        return a.id

    def _decide(self, approval_id: int, outcome: Outcome, reason: str | None) -> View:
        a = self._record(approval_id)
        if a is None:
            raise UnknownId(f"no approval #{approval_id}")
        decided = self.core.decide(a, outcome, reason, time.time())
        Approval.update(status=outcome, decided_at=decided.record.decided_at, reason=reason).where(
            Approval.id == approval_id).execute()
        _log.info("approval.resolved", approval_id=a.id, outcome=outcome, reason=reason)
        self._broker.tell(Broker.send, SYSTEM, MANAGER, json.dumps(decided.message))
        self._hub.publish(ApprovalResolved(decided.view))
        return decided.view
