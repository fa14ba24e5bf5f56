"""The Questions actor (F7–F10, F43) and one TtlTimer actor per question with a TTL.

``ask`` stores the question and answers its id at once. Answer, cancel and
expiry all go through ``_resolve``, which writes only while the question is
still pending: the first one wins, the later ones change nothing and send no
second event. The winner puts ``OperatorAnswered`` in the asker's inbox.
Timers are re-armed from ``deadline_at`` when the daemon starts; a deadline
that passed while it was down expires at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle, answers
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import Hub, QuestionAsked, QuestionResolved
from hyperhive.actors.questions_core import (
    CANCELLED,
    How,
    expiry_answer,
    merge_answer,
    operator_answered,
    options_of,
    validate_ask,
)
from hyperhive.errors import UnknownId
from hyperhive.names import SYSTEM
from hyperhive.store.models import Question

__all__ = ["Questions", "TtlTimer", "question_view"]

_log = logs.get("hyperhive.questions")
RECENT_RESOLVED = 20


def question_view(q: Any) -> dict[str, Any]:
    return {
        "id": q.id, "asker": q.asker, "question": q.question, "options": options_of(q.options),
        "multi": bool(q.multi), "asked_at": q.asked_at, "deadline_at": q.deadline_at,
        "default": q.default_answer, "answer": q.answer, "answered_at": q.answered_at, "how": q.how,
    }


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
    def __init__(self, broker: pykka.ActorProxy[Broker], clock: LoopClock, hub: Hub) -> None:
        super().__init__()
        self._broker = Handle(broker)
        self._clock = clock
        self._hub = hub
        self._timers: dict[int, pykka.ActorRef[TtlTimer]] = {}
        self._me: Handle[Questions] | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="questions")

    @answers
    def rearm(self) -> int:
        """Arm a timer for every pending question with a deadline; expire the
        ones whose deadline passed while the daemon was down. Called once the
        agents are registered, so the events have somewhere to go."""
        now = time.time()
        expired = 0
        for q in Question.select().where(Question.how.is_null() & Question.deadline_at.is_null(False)):
            deadline: float = q.deadline_at  # type: ignore[assignment]  # not NULL by the query
            if deadline <= now:
                self._expire(q.id)
                expired += 1
            elif q.id not in self._timers:
                self._arm(q.id, deadline)
        _log.info("questions.rearmed", timers=len(self._timers), expired=expired)
        return len(self._timers)

    def on_stop(self) -> None:
        for ref in self._timers.values():
            ref.stop(block=False)
        self._timers.clear()

    # --- verbs -------------------------------------------------------------
    @answers
    def ask(self, asker: str, question: str, options: list[str], multi: bool = False,
            ttl_seconds: float | None = None, default: str | None = None) -> int:
        validate_ask(question, options, multi, ttl_seconds, default)
        now = time.time()
        deadline = None if ttl_seconds is None else now + ttl_seconds
        q = Question.create(
            asker=asker, question=question, asked_at=now, options=json.dumps(options),
            multi=multi, deadline_at=deadline, default_answer=default,
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
    def list(self) -> dict[str, list[dict[str, Any]]]:
        """Pending questions (oldest first) and the latest resolved ones."""
        pending = Question.select().where(Question.how.is_null()).order_by(Question.id)
        done = (Question.select().where(Question.how.is_null(False))
                .order_by(Question.id.desc()).limit(RECENT_RESOLVED))
        return {"pending": [question_view(q) for q in pending], "resolved": [question_view(q) for q in done]}

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

    def _resolve(self, q: Any, text: str, how: How) -> None:
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
        _log.info("question.resolved", question_id=q.id, how=how)
        self._broker.tell(Broker.send, SYSTEM, q.asker, json.dumps(event, ensure_ascii=False))
        self._hub.publish(QuestionResolved(event, q.asker))

    def _arm(self, qid: int, deadline_at: float) -> None:
        assert self._me is not None
        self._timers[qid] = TtlTimer.start(qid, deadline_at, self._me, self._clock)
