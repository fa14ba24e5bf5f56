"""The budget service (issue 15): what each agent's budget is, and what
happens when the spend table reports a crossing. On the IOLoop thread.

- An agent's budget is its applied agent.json's ``budget``, or what the
  operator raised it to (``agents/<n>/budget.json``, the daemon's: kept while
  agent.json says the same budget, dropped once it says another). The fleet's
  is ``--fleet-budget-usd``/``--fleet-budget-per``, raised in
  ``fleet-budget.json`` the same way.
- At 80 %: ``BudgetWarning`` (the notify command).
- At 100 %: ``BudgetExceeded`` (to m1nd, and the notify command through the
  question) and one operator question per window: raise to twice the limit,
  raise by the configured budget, or stop the agent (the fleet: hold every
  turn); free text is a new limit in dollars; the default on expiry is the
  stop. A raise lets the waiting turns run (``BudgetRaised`` to m1nd).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.events import (
    BudgetExceeded,
    BudgetRaised,
    BudgetWarning,
    ContainerActivity,
    Event,
    Hub,
    QuestionResolved,
)
from hyperhive.actors.questions import Questions
from hyperhive.budgets import Budget, Standing, budget_question, parse_budget, raise_answer
from hyperhive.errors import HiveError
from hyperhive.names import MANAGER, SYSTEM, AgentName
from hyperhive.paths import StatePaths
from hyperhive.web.tables.spend import FLEET, Spend

__all__ = ["KIND", "BudgetService"]

_log = logs.get("hyperhive.budgets")
KIND = "budget"  # the operator question's kind
OVERRIDE = "budget.json"


class BudgetService:
    def __init__(self, paths: StatePaths, spend: Spend, hub: Hub, fleet: Budget | None,
                 questions: pykka.ActorProxy[Questions] | None = None, broker: pykka.ActorProxy[Broker] | None = None,
                 stop_agent: Callable[[str], Awaitable[Any]] | None = None, ttl_seconds: float = 3600.0) -> None:
        self._paths = paths
        self.spend = spend
        self._hub = hub
        self._fleet_base = fleet
        self._questions = questions
        self._broker = broker
        self._stop_agent = stop_agent
        self._ttl = ttl_seconds
        self._limits: dict[str, tuple[Budget | None, Budget | None]] = {}  # agent → (configured, effective)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        spend.on_standing = self._on_standing
        spend.fleet = self._effective(fleet, self._override(paths.root / "fleet-budget.json"))

    def start(self) -> Callable[[], None]:
        """Listen for the answers to budget questions; returns the unsubscribe."""
        self._loop = asyncio.get_running_loop()

        def listen(event: Event) -> None:  # any thread: hand over
            if isinstance(event, QuestionResolved) and event.answered.get("kind") == KIND:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._spawn, self._resolved(event.answered))

        return self._hub.subscribe(listen)

    # --- the limits ------------------------------------------------------------------------
    def limit_of(self, agent: str) -> Budget | None:
        cached = self._limits.get(agent)
        if cached is None:
            cached = self._read(agent)
            self._limits[agent] = cached
        return cached[1]

    def configured(self, who: str) -> Budget | None:
        if who == FLEET:
            return self._fleet_base
        self.limit_of(who)
        return self._limits[who][0]

    def reload(self, agent: str) -> None:
        """The agent's config may have changed (spawned, rebuilt, destroyed): read it again."""
        self._limits.pop(agent, None)
        self.spend.changed(agent)

    def _read(self, agent: str) -> tuple[Budget | None, Budget | None]:
        try:
            base = self._paths.load_applied(AgentName(agent)).budget
        except (HiveError, OSError, ValueError):
            base = None
        return base, self._effective(base, self._override(self._paths.agent(AgentName(agent)) / OVERRIDE))

    @staticmethod
    def _override(path: Path) -> dict[str, Any] | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    @staticmethod
    def _effective(base: Budget | None, override: dict[str, Any] | None) -> Budget | None:
        """The raised limit while the configured budget is still the one it raised."""
        if base is None or override is None or override.get("base") != base.to_wire():
            return base
        try:
            return parse_budget({"usd": override.get("usd"), "per": base.per})
        except HiveError:
            return base

    def set_limit(self, who: str, usd: float) -> Budget:
        """The operator raised ``who``'s budget to ``usd`` (same window)."""
        base = self.configured(who)
        if base is None:
            raise HiveError(f"{who or 'the fleet'} has no budget to raise")
        was = self.spend.limit(who) or base
        new = Budget(round(usd, 6), base.per)
        path = self._paths.root / "fleet-budget.json" if who == FLEET else \
            self._paths.agent(AgentName(who)) / OVERRIDE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"usd": new.usd, "base": base.to_wire()}) + "\n")
        os.replace(tmp, path)
        if who == FLEET:
            self.spend.fleet = new
        else:
            self._limits[who] = (base, new)
        _log.info("budget.raised", who=who or "fleet", usd=new.usd, per=new.per, was=was.usd)
        self._publish(BudgetRaised(who, new.usd, new.per, was.usd), tell_manager=True)
        self.spend.changed(who)
        return new

    # --- crossings ----------------------------------------------------------------------------
    def _on_standing(self, who: str, standing: Standing, spent: float, limit: Budget) -> None:
        if standing == "warn":
            self._publish(BudgetWarning(who, round(spent, 6), limit.usd, limit.per))
        elif standing == "over":
            self._spawn(self._exceeded(who, spent, limit))
        if standing in ("over", "capped"):
            self._spawn(self._hold_recvs(who))
        if who != FLEET:
            self._hub.publish(ContainerActivity(who))  # repaint its row: over budget, capped

    async def _exceeded(self, who: str, spent: float, limit: Budget, unread: str | None = None) -> None:
        """Ask the operator; ``unread``: the answer to the last question, which said
        neither a raise nor the stop (asked again, with no second BudgetExceeded)."""
        name = "the fleet" if who == FLEET else who
        base = self.configured(who) or limit
        text, options = budget_question(name, spent, limit, base.usd)
        if unread is not None:
            text = f"{text} (the answer {unread[:200]!r} was neither a raise nor '{options[2]}': asked again)"
        qid: int | None = None
        if self._questions is not None:
            qid = await Handle(self._questions).ask(
                Questions.ask, who or SYSTEM, text, options, False, self._ttl, options[2], KIND,
                {"agent": who, "usd": limit.usd, "per": limit.per, "base_usd": base.usd})
        _log.warning("budget.exceeded", who=who or "fleet", spent=round(spent, 6), budget=limit.usd,
                     per=limit.per, question_id=qid, asked_again=unread is not None)
        if unread is None:
            self._publish(BudgetExceeded(who, round(spent, 6), limit.usd, limit.per, qid), tell_manager=True)

    async def _hold_recvs(self, who: str) -> None:
        """A harness parked on its system recv would be handed the next message, then
        wait with it for a turn: its recv is released instead, and its next one waits
        in the gate before taking anything."""
        if self._broker is None:
            return
        broker = Handle(self._broker)
        names = [who] if who != FLEET else list((await broker.ask(Broker.stats)).get("parked", {}))
        for name in names:
            broker.tell(Broker.drop_system_waiters, name)

    async def _resolved(self, answered: dict[str, Any]) -> None:
        try:
            detail = json.loads(answered.get("detail") or "{}")
            who = str(detail["agent"])
            limit = Budget(float(detail["usd"]), detail["per"])
            base_usd = float(detail.get("base_usd", limit.usd))
        except (ValueError, KeyError, TypeError):
            _log.error("budget.bad_question", question_id=answered.get("id"))
            return
        how, text = answered.get("how"), str(answered.get("answer") or "")
        if how == "cancelled":
            return  # the turns keep waiting: a raise (or the next window) lets them run
        spent = self.spend.spent(who, limit.per)
        usd = None if how == "expired" else raise_answer(text, limit, base_usd, spent)
        stop = budget_question("the fleet" if who == FLEET else who, spent, limit, base_usd)[1][2]
        if usd is not None:
            self.set_limit(who, usd)
        elif how == "answered" and text.strip().casefold().split(",", 1)[0].strip() != stop.casefold():
            self._spawn(self._exceeded(who, spent, limit, unread=text))  # a typo stops nothing: asked again
        elif who != FLEET and self._stop_agent is not None:
            _log.info("budget.stopping", agent=who, how=how)
            await self._stop_agent(who)

    # --- internals ------------------------------------------------------------------------------
    def _publish(self, event: BudgetWarning | BudgetExceeded | BudgetRaised, tell_manager: bool = False) -> None:
        self._hub.publish(event)
        if tell_manager and self._broker is not None:
            Handle(self._broker).tell(Broker.send, SYSTEM, MANAGER, json.dumps(event.payload()))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        fut = asyncio.ensure_future(coro)
        self._tasks.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if not f.cancelled() and f.exception() is not None:
                _log.error("budget.task_failed", error=repr(f.exception()))

        fut.add_done_callback(done)
