"""The Approvals actor's rules, with no actor, database or repo in sight:
which requests may queue, the life of an approval and what its outcome says.

An approval is ``pending`` until the operator decides. Approve makes it
*approving* (``busy``: the Coordinator is at work; views show ``applying``)
until the work ends ``approved`` or ``failed``; deny makes it ``denied``. A
decided or approving approval takes no second decision: the first one wins.
The actor gathers the facts (rows, files on disk) and does what these
functions return; every time is the ``now`` it passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from hyperhive import config_repo
from hyperhive.errors import BadRequest, Conflict, UnknownAgent, UnknownId
from hyperhive.names import AgentName, validate_name, validate_spawnable
from hyperhive.paths import AgentConfig

__all__ = [
    "KICK",
    "MAX_PROMPT",
    "RECENT_DECIDED",
    "ApprovalRecord",
    "ApprovalsCore",
    "Decided",
    "NewApproval",
    "Outcome",
]

RECENT_DECIDED = 20
MAX_PROMPT = 64 * 1024
KICK = "spawned after the operator's approval"
Outcome = Literal["approved", "denied", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewApproval:
    """The fields of an approval to queue (the store gives it its id)."""
    kind: str  # spawn | apply_commit
    agent: str
    requested_by: str
    requested_at: float
    config: str | None = None  # spawn: the initial config (JSON)
    prompt: str | None = None  # spawn: the initial prompt
    commit: str | None = None  # apply_commit: the full commit id
    diff_html: str | None = None
    files_json: str | None = None  # apply_commit: {path: text} shown in the diff and applied as is
    reason: str | None = None  # "revive"; once decided, the deny reason or the failure

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(NewApproval)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRecord(NewApproval):
    """One approval as the store holds it (an ``approvals`` row)."""
    id: int
    status: str = "pending"
    decided_at: float | None = None

    @classmethod
    def of(cls, row: Any) -> ApprovalRecord:
        """From anything with the row's attributes (a peewee ``Approval``)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def view(self) -> dict[str, Any]:
        """As ``hive approvals`` and the dashboard show it."""
        return {
            "id": self.id, "kind": self.kind, "agent": self.agent, "requested_by": self.requested_by,
            "requested_at": self.requested_at, "config": json.loads(self.config) if self.config else None,
            "prompt": self.prompt, "commit": self.commit, "diff_html": self.diff_html, "status": self.status,
            "decided_at": self.decided_at, "reason": self.reason,
        }

    def kept_files(self) -> dict[str, str]:
        """The files an apply_commit approval showed, as it kept them."""
        if self.files_json is None:
            raise BadRequest(
                f"approval #{self.id} was queued by an older hyperhive that did not keep the files its diff "
                f"showed, so it cannot be applied: request it again (request_apply_commit {self.agent} "
                f"{(self.commit or '')[:12]}) and approve the new one")
        return config_repo.check_files(json.loads(self.files_json))


@dataclass(frozen=True, slots=True)
class Decided:
    """An outcome: the row as it now reads, the ``ApprovalResolved`` the
    manager gets, and the view the dashboard and the caller get."""
    record: ApprovalRecord
    message: dict[str, Any]
    view: dict[str, Any]


def _check_prompt(prompt: str | None) -> None:
    if prompt is not None and len(prompt) > MAX_PROMPT:
        raise BadRequest(f"prompt is over {MAX_PROMPT} characters")


def _no_duplicate(agent: str, waiting: int | None) -> None:
    if waiting is not None:
        raise Conflict(f"a spawn of {agent} already waits for approval (#{waiting})")


@dataclass
class ApprovalsCore:
    busy: set[int] = field(default_factory=set)  # approving: the Coordinator is at work

    # --- requests --------------------------------------------------------
    @staticmethod
    def spawn(requested_by: str, name: str, config: AgentConfig | None, prompt: str | None, *,
              live: bool, kept: bool, waiting: int | None, now: float) -> NewApproval:
        """``live``: a container of that name exists; ``kept``: its agent dir
        does; ``waiting``: the id of a pending spawn of it."""
        agent = validate_spawnable(name)
        if live:
            raise Conflict(f"agent {agent} already exists")
        if kept:
            raise Conflict(f"{agent} has kept state; revive it (or purge it first)")
        _no_duplicate(agent, waiting)
        _check_prompt(prompt)
        return NewApproval(kind="spawn", agent=agent, requested_by=requested_by, requested_at=now,
                           config=(config or AgentConfig()).to_json(), prompt=prompt)

    @staticmethod
    def revive(requested_by: str, agent: AgentName, kept_config: AgentConfig | None, *,
               waiting: int | None, now: float) -> NewApproval:
        """F18: a spawn that brings a tombstone back with its kept config (see
        ``check_revive`` for what must hold first)."""
        _no_duplicate(agent, waiting)
        return NewApproval(kind="spawn", agent=agent, requested_by=requested_by, requested_at=now,
                           config=(kept_config or AgentConfig()).to_json(), reason="revive")

    @staticmethod
    def check_revive(name: str, *, live: bool, kept_dir: bool) -> AgentName:
        agent = validate_spawnable(name)
        if live:
            raise Conflict(f"agent {agent} is live; nothing to revive")
        if not kept_dir:
            raise UnknownAgent(f"no kept state for {agent!r}")
        return agent

    @staticmethod
    def check_agent(name: str, *, live: bool) -> AgentName:
        """The agent a config change is for: it must exist."""
        agent = validate_name(name)
        if not live:
            raise UnknownAgent(f"no agent named {agent}")
        return agent

    @staticmethod
    def config_files(prompt: str | None, agent_json: str | None) -> dict[str, str]:
        """The files ``propose_config`` commits: the prompt and/or a checked agent.json."""
        _check_prompt(prompt)
        files: dict[str, str] = {}
        if prompt is not None:
            files[config_repo.PROMPT_FILE] = prompt
        if agent_json is not None:
            files[config_repo.CONFIG_FILE] = AgentConfig.from_json(agent_json, where="agent_json").to_json()
        return files

    @staticmethod
    def apply_commit(requested_by: str, agent: AgentName, full: str, new: dict[str, str], old: dict[str, str],
                     *, now: float) -> NewApproval:
        """Queue ``full``'s files ``new`` over the applied ``old``: kept as shown."""
        if config_repo.PROMPT_FILE not in new and config_repo.CONFIG_FILE not in new:
            raise BadRequest(f"commit {full[:12]} has neither agent.json nor {config_repo.PROMPT_FILE}")
        if config_repo.CONFIG_FILE in new:
            AgentConfig.from_json(new[config_repo.CONFIG_FILE], where=f"agent.json in {full[:12]}")
        return NewApproval(kind="apply_commit", agent=agent, requested_by=requested_by, requested_at=now, commit=full,
                           diff_html=config_repo.diff_html(old, new), files_json=json.dumps(new, sort_keys=True))

    # --- decisions --------------------------------------------------------
    def begin(self, a: ApprovalRecord | None, approval_id: int) -> ApprovalRecord:
        """Approve: a pending approval becomes approving (else UnknownId/Conflict)."""
        a = self.pending(a, approval_id)
        self.busy.add(a.id)
        return a

    def pending(self, a: ApprovalRecord | None, approval_id: int) -> ApprovalRecord:
        if a is None:
            raise UnknownId(f"no approval #{approval_id}")
        if a.status != "pending" or a.id in self.busy:
            raise Conflict(f"approval #{a.id} is already {'being applied' if a.id in self.busy else a.status}")
        return a

    @staticmethod
    def spawn_config(a: ApprovalRecord) -> AgentConfig:
        return AgentConfig.from_json(a.config or "{}", where="the requested config")

    def finished(self, approval_id: int, error: BaseException | None) -> tuple[Outcome, str | None]:
        """The Coordinator's work ended: approved, or failed with its message."""
        self.busy.discard(approval_id)
        if error is None:
            return "approved", None
        return "failed", str(getattr(error, "message", error))

    def broke(self, approval_id: int, error: BaseException) -> tuple[Outcome, str]:
        """Approving failed before the Coordinator got the work."""
        self.busy.discard(approval_id)
        return "failed", f"{type(error).__name__}: {error}"

    @staticmethod
    def decide(a: ApprovalRecord, outcome: Outcome, reason: str | None, now: float) -> Decided:
        done = replace(a, status=outcome, decided_at=now, reason=reason)
        message = {"event": "ApprovalResolved", "id": done.id, "kind": done.kind, "agent": done.agent,
                   "commit": done.commit, "outcome": outcome, "reason": reason}
        return Decided(done, message, done.view())

    # --- reads ------------------------------------------------------------
    def view(self, a: ApprovalRecord) -> dict[str, Any]:
        v = a.view()
        if a.id in self.busy:
            v["status"] = "applying"
        return v

    def listing(self, pending: list[ApprovalRecord], decided: list[ApprovalRecord]) -> dict[str, list[dict[str, Any]]]:
        return {"pending": [self.view(a) for a in pending], "decided": [a.view() for a in decided]}
