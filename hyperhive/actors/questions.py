"""The Questions actor (F7–F10, F43) and one TtlTimer actor per question with a TTL.

``ask`` stores the question and answers its id at once. Answer, cancel and
expiry all go through ``_resolve``, which writes only while the question is
still pending: the first one wins, the later ones change nothing and send no
second event. The winner puts ``OperatorAnswered`` in the asker's inbox.
Timers are re-armed from ``deadline_at`` when the daemon starts; a deadline
that passed while it was down expires at once.

Permission questions (``kind`` "permission", issue 14; rules in
`permission_core`) are asked by an agent's CLI through the ``permission`` op,
which parks on ``ask_permission`` until the question resolves: the winner
resolves that waiter with the CLI's answer (allow / deny) instead of writing
to the asker's inbox. A waiter that gives up (its connection closed, the turn
was cancelled) cancels its question; one left from before a restart is
cancelled at boot. The actor also keeps the tools granted "from now on"
(`grants.GrantStore`): a granted tool is allowed at once, with no question.
Review 14: an agent asks at most `RATE_LIMIT` in `RATE_WINDOW` seconds (past
it, and for a call too long to show whole, the answer is deny at once, no
row); a permission question is published (``question.asked``: the notify
command, the dashboard) only once pending `ANNOUNCE_GRACE` (or when resolved
first, unless its caller just went away); each agent keeps its newest
`KEEP_RESOLVED` resolved permission rows.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle, Reply, answers, claim, fail, parks, resolve
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import ContainerRemoved, Event, Hub, QuestionAsked, QuestionResolved
from hyperhive.actors.grants import GrantStore
from hyperhive.actors.permission_core import (
    ANNOUNCE_GRACE,
    DENY,
    KEEP_RESOLVED,
    KIND,
    MAX_INPUT,
    RATE_LIMIT,
    RATE_WINDOW,
    admit,
    behavior,
    check_tool_name,
    options_for,
    question_text,
    throttled_message,
    unshowable,
)
from hyperhive.actors.question_rows import detail, detail_json, question_view
from hyperhive.actors.questions_core import (
    CANCELLED,
    How,
    expiry_answer,
    merge_answer,
    operator_answered,
    options_of,
    validate_ask,
)
from hyperhive.errors import BadRequest, Conflict, HiveError, Internal, UnknownId
from hyperhive.names import SYSTEM
from hyperhive.store.models import Question

__all__ = ["Questions", "TtlTimer", "question_view"]

_log = logs.get("hyperhive.questions")
RECENT_RESOLVED = 20
MAX_PENDING_PERMISSIONS = 16  # per agent; the CLI asks about one call at a time (a few, for parallel calls)


class TtlTimer(pykka.ThreadingActor):
    """Owns one deadline; fires once (expire → Questions), then stops."""

    def __init__(self, qid: int, deadline_at: float, questions: Handle[Questions], clock: LoopClock) -> None:
        super().__init__()
        self.qid = qid
        self.deadline_at = deadline_at
        self._questions = questions
        self._clock = clock

    def on_start(self) -> None:
        logs.bind_thread(actor="ttl", question=self.qid)
        self._clock.call_later(self.deadline_at - time.time(), Handle(self.actor_ref.proxy()).tell, TtlTimer.fire)

    def fire(self) -> None:
        self._questions.tell(Questions.expire, self.qid)
        self.stop()


class Questions(pykka.ThreadingActor):
    def __init__(self, broker: pykka.ActorProxy[Broker], clock: LoopClock, hub: Hub,
                 grants: GrantStore | None = None, *, announce_grace: float = ANNOUNCE_GRACE) -> None:
        """``announce_grace``: how long a permission question must stay pending
        before it is published (tests pass a short one)."""
        super().__init__()
        self._announce_grace = announce_grace
        self._broker = Handle(broker)
        self._clock = clock
        self._hub = hub
        self._timers: dict[int, pykka.ActorRef[TtlTimer]] = {}
        self._me: Handle[Questions] | None = None
        self._grants = grants or GrantStore()
        # permission question id → the parked op and the tool's whole input (the row keeps a small one only)
        self._waiters: dict[int, tuple[Reply[dict[str, Any]], dict[str, Any]]] = {}
        self._unsubscribe: Any = None
        self._asked: dict[str, list[float]] = {}  # agent → monotonic times of its recent permission questions
        self._throttled: set[str] = set()  # agents refused since their last admitted question (logged once)
        self._unannounced: set[int] = set()  # permission questions not yet published (ANNOUNCE_GRACE)

    def on_start(self) -> None:
        me = self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="questions")

        def removed(event: Event) -> None:  # on the publisher's thread: hand over
            if isinstance(event, ContainerRemoved):
                me.tell(Questions.forget_grants, event.agent)

        self._unsubscribe = self._hub.subscribe(removed)

    @answers
    def rearm(self) -> int:
        """Arm a timer for every pending question with a deadline; expire the
        ones whose deadline passed while the daemon was down. Called once the
        agents are registered, so the events have somewhere to go."""
        now = time.time()
        expired = 0
        for q in Question.select().where(Question.how.is_null() & Question.deadline_at.is_null(False)):
            deadline: float = q.deadline_at  # type: ignore[assignment]  # not NULL by the query
            if q.kind == KIND and q.id not in self._waiters:  # its CLI is gone with the old daemon
                self._resolve(q, "[cancelled: the daemon restarted]", "cancelled")
            elif deadline <= now:
                self._expire(q.id)
                expired += 1
            elif q.id not in self._timers:
                self._arm(q.id, deadline)
        _log.info("questions.rearmed", timers=len(self._timers), expired=expired)
        return len(self._timers)

    def on_stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for ref in self._timers.values():
            ref.stop(block=False)
        self._timers.clear()

    # --- verbs -------------------------------------------------------------
    @answers
    def ask(self, asker: str, question: str, options: list[str], multi: bool = False,
            ttl_seconds: float | None = None, default: str | None = None, kind: str | None = None,
            detail: dict[str, Any] | None = None) -> int:
        """``kind`` "budget" (the daemon's own question, issue 15): its answer goes
        to whoever listens for ``question.resolved`` (the budget service, by
        ``detail``), not to the asker's inbox."""
        validate_ask(question, options, multi, ttl_seconds, default)
        now = time.time()
        deadline = None if ttl_seconds is None else now + ttl_seconds
        q = Question.create(
            asker=asker, question=question, asked_at=now, options=json.dumps(options),
            multi=multi, deadline_at=deadline, default_answer=default, kind=kind,
            detail=None if detail is None else json.dumps(detail),
        )
        if deadline is not None:
            self._arm(q.id, deadline)
        view = question_view(q)
        _log.info("question.asked", question_id=q.id, ttl=ttl_seconds)
        self._hub.publish(QuestionAsked(view))
        return int(q.id)

    @answers
    def answer(self, qid: int, chosen: list[str], text: str) -> dict[str, Any]:
        q = self._get(qid)
        if q.how is None:
            self._resolve(q, merge_answer(options_of(q.options), q.multi, chosen, text), "answered")
        return self._outcome(qid)

    @answers
    def cancel(self, qid: int) -> dict[str, Any]:
        q = self._get(qid)
        if q.how is None:
            self._resolve(q, CANCELLED, "cancelled")
        return self._outcome(qid)

    def expire(self, qid: int) -> None:
        try:
            self._expire(qid)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("question.expire_failed", question_id=qid)

    @answers
    def list(self) -> dict[str, Any]:
        """Pending questions (oldest first), the latest resolved ones, and every
        agent's granted tools (``grants``: for the dashboard; `gate.questions`
        leaves them out of the operator verb's reply)."""
        pending = Question.select().where(Question.how.is_null()).order_by(Question.id)
        done = (Question.select().where(Question.how.is_null(False))
                .order_by(Question.id.desc()).limit(RECENT_RESOLVED))
        return {"pending": [question_view(q) for q in pending], "resolved": [question_view(q) for q in done],
                "grants": self._grants.all()}

    # --- tool permissions (issue 14) -------------------------------------------
    @parks
    def ask_permission(self, reply: Reply[dict[str, Any]] | None, agent: str, tool_name: str,
                       input_json: str, tool_use_id: str, ttl_seconds: float) -> None:
        """Park ``reply`` until the operator decides on this tool call (at once
        for a granted tool): ``{"decision": {"behavior", …}, "question_id"}``."""
        try:
            tool = check_tool_name(tool_name)
            if len(input_json) > MAX_INPUT:
                raise BadRequest(f"the tool input is over {MAX_INPUT} bytes")
            inp = json.loads(input_json)
            if not isinstance(inp, dict):
                raise BadRequest("the tool input must be a JSON object")
            if tool in self._grants.of(agent):
                if claim(reply):
                    resolve(reply, {"decision": {"behavior": "allow", "updatedInput": inp}, "question_id": None})
                return
            validate_ask("permission", [], False, ttl_seconds, None)
            waiting = Question.select().where((Question.asker == agent) & (Question.kind == KIND)
                                              & Question.how.is_null()).count()
            if waiting >= MAX_PENDING_PERMISSIONS:  # an agent cannot bury the operator in questions
                raise Conflict(f"{agent} already has {waiting} tool calls waiting for the operator")
            refusal = self._refusal(agent, tool, inp)
            if refusal is not None:
                if claim(reply):
                    resolve(reply, {"decision": {"behavior": "deny", "message": refusal}, "question_id": None})
                return
            now = time.time()
            q = Question.create(
                asker=agent, question=question_text(agent, tool, inp), asked_at=now,
                options=json.dumps(options_for(tool)), multi=False, deadline_at=now + ttl_seconds,
                default_answer=DENY, kind=KIND,
                detail=detail_json(tool, inp, input_json, tool_use_id),
            )
        except Exception as exc:  # noqa: BLE001 - any other would stop this actor: every question with it
            if not isinstance(exc, HiveError | ValueError):
                _log.exception("question.permission_failed", agent=agent)
            if claim(reply):
                fail(reply, exc if isinstance(exc, HiveError) else BadRequest(f"the tool input is not JSON: {exc}")
                     if isinstance(exc, ValueError) else Internal(f"the permission question failed: "
                                                                  f"{type(exc).__name__}"))
            return
        qid = int(q.id)
        self._arm(qid, now + ttl_seconds)
        if reply is not None:
            self._waiters[qid] = (reply, inp)
            me = self._me
            assert me is not None
            # A caller that gives up (connection closed, timeout) leaves nobody to run the tool for.
            reply.add_done_callback(lambda f: me.tell(Questions.abandon, qid) if f.cancelled() else None)
        _log.info("question.permission_asked", question_id=qid, agent=agent, tool=tool)
        # Announced (the notify command, the dashboard) only if still pending after a beat:
        # a caller that asks and drops its connection at once makes no notification.
        self._unannounced.add(qid)
        assert self._me is not None
        self._clock.call_later(self._announce_grace, self._me.tell, Questions.announce, qid)

    def _refusal(self, agent: str, tool: str, inp: dict[str, Any]) -> str | None:
        """Why this call is denied without asking: past the agent's rate (logged
        once per run of refusals), or too long to show whole."""
        recent, admitted = admit(self._asked.get(agent, ()), time.monotonic())
        self._asked[agent] = recent
        if not admitted:
            if agent not in self._throttled:
                self._throttled.add(agent)
                _log.warning("question.permission_throttled", agent=agent, limit=RATE_LIMIT, window=RATE_WINDOW)
            return throttled_message(tool)
        self._throttled.discard(agent)
        hidden = unshowable(tool, inp, agent)
        if hidden is not None:
            _log.info("question.permission_unshowable", agent=agent, tool=tool)
        return hidden

    def announce(self, qid: int) -> None:
        """The announce grace after a permission question was asked: publish it if still pending."""
        try:
            if qid in self._unannounced:
                self._unannounced.discard(qid)
                q = Question.get_or_none(Question.id == qid)
                if q is not None and q.how is None:
                    self._hub.publish(QuestionAsked(question_view(q)))
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("question.announce_failed", question_id=qid)

    def abandon(self, qid: int) -> None:
        """The parked permission op went away: its question is cancelled (and,
        gone before it was announced, never announced)."""
        try:
            q = Question.get_or_none(Question.id == qid)
            if q is not None and q.how is None:
                self._resolve(q, "[cancelled: the agent stopped waiting]", "cancelled", announce=False)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("question.abandon_failed", question_id=qid)

    @answers
    def grants_of(self, agent: str) -> tuple[str, ...]:
        return self._grants.of(agent)

    @answers
    def revoke_tool(self, agent: str, tool: str) -> dict[str, Any]:
        """Take back a tool granted "from now on": ``{"agent", "tool", "revoked", "tools"}``."""
        revoked = self._grants.revoke(agent, check_tool_name(tool))
        return {"agent": agent, "tool": tool, "revoked": revoked, "tools": list(self._grants.of(agent))}

    def forget_grants(self, agent: str) -> None:
        self._grants.forget(agent)
        self._asked.pop(agent, None)
        self._throttled.discard(agent)

    # --- internals -----------------------------------------------------------
    def _get(self, qid: int) -> Any:
        q = Question.get_or_none(Question.id == qid)
        if q is None:
            raise UnknownId(f"no question #{qid}")
        return q

    def _outcome(self, qid: int) -> dict[str, Any]:
        return question_view(self._get(qid))

    def _expire(self, qid: int) -> None:
        q = Question.get_or_none(Question.id == qid)
        if q is not None and q.how is None:
            self._resolve(q, expiry_answer(q.default_answer), "expired")

    def _resolve(self, q: Any, text: str, how: How, announce: bool = True) -> None:
        now = time.time()
        # Conditional on still pending: the row, not this actor's memory, decides the winner.
        won = Question.update(answer=text, answered_at=now, how=how).where(
            (Question.id == q.id) & Question.how.is_null()
        ).execute()
        timer = self._timers.pop(q.id, None)
        if timer is not None:
            timer.stop(block=False)
        if not won:
            return
        event = operator_answered(q.id, q.question, text, how)
        if q.kind == KIND:  # the answer goes back as the tool's reply, not to the inbox
            if q.id in self._unannounced:  # resolved within the grace: asked first (but not if abandoned)
                self._unannounced.discard(q.id)
                if announce:
                    self._hub.publish(QuestionAsked(question_view(q)))
            self._permission_resolved(q, text, how)
            self._hub.publish(QuestionResolved(event, q.asker))
            return
        _log.info("question.resolved", question_id=q.id, how=how)
        if q.kind is None:  # someone asked: the answer is theirs to read
            self._broker.tell(Broker.send, SYSTEM, q.asker, json.dumps(event, ensure_ascii=False))
        self._hub.publish(QuestionResolved({**event, "kind": q.kind or "question", "detail": q.detail},
                                           q.asker))

    def _permission_resolved(self, q: Any, text: str, how: How) -> None:
        tool, stored, _ = detail(q)
        waiter = self._waiters.pop(q.id, None)
        decision, grant = behavior(tool, waiter[1] if waiter is not None else stored, text, how)
        if grant:
            self._grants.grant(q.asker, tool)
        _log.info("question.permission_resolved", question_id=q.id, how=how, behavior=decision["behavior"],
                  granted=grant)
        if waiter is not None and claim(waiter[0]):
            resolve(waiter[0], {"decision": decision, "question_id": q.id})
        self._prune(q.asker)

    def _prune(self, agent: str) -> None:
        """Keep an agent's newest KEEP_RESOLVED resolved permission questions, no more."""
        mine = (Question.asker == agent) & (Question.kind == KIND) & Question.how.is_null(False)
        edge = Question.select(Question.id).where(mine).order_by(Question.id.desc()).offset(KEEP_RESOLVED).limit(1)
        last = edge.scalar()
        if last is not None:
            gone = Question.delete().where(mine & (Question.id <= last)).execute()
            _log.debug("question.permissions_pruned", agent=agent, deleted=gone)

    def _arm(self, qid: int, deadline_at: float) -> None:
        assert self._me is not None
        self._timers[qid] = TtlTimer.start(qid, deadline_at, self._me, self._clock)
