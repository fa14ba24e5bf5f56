"""The daemon's cost parts (issue 15), built and wired in one place: the
Ledger actor (the record in hive.sqlite), the spend table (sums and the gate,
on the IOLoop) and the budget service (limits, the operator's question).

`start_costs` runs on the IOLoop before the agents' sockets open; the
gateway reports each call to `Costs.on_call` and asks the spend table
(its ``guard``) before and during each call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pykka
from peewee import Database

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.events import ContainerRemoved, ContainerState, Event, Hub
from hyperhive.actors.ledger import Ledger
from hyperhive.actors.questions import Questions
from hyperhive.budgets import Budget
from hyperhive.paths import StatePaths
from hyperhive.pricing import load_prices
from hyperhive.settings import Settings
from hyperhive.spend_core import KEEP_SECONDS
from hyperhive.store.usage import CallRow
from hyperhive.web.operator.budgets import BudgetService
from hyperhive.web.tables.spend import Spend

__all__ = ["Costs", "fleet_budget", "start_costs"]


@dataclass
class Costs:
    ledger: pykka.ActorProxy[Ledger]
    spend: Spend
    budgets: BudgetService
    unsubscribe: Callable[[], None]

    def on_call(self, agent: str, usage: dict[str, Any]) -> None:
        """The gateway's report of one call (on the IOLoop)."""
        self.spend.record(agent, usage)

    def close(self) -> None:
        """At the daemon's stop, after the gateways: the last rows are written, then the Ledger stops."""
        self.unsubscribe()
        self.spend.close()
        try:
            self.ledger.actor_ref.stop(block=True, timeout=30)
        except pykka.Timeout:
            pass


def fleet_budget(settings: Settings) -> Budget | None:
    if settings.fleet_budget_usd <= 0:
        return None
    return Budget(settings.fleet_budget_usd, settings.fleet_budget_per)  # type: ignore[arg-type]


async def start_costs(settings: Settings, paths: StatePaths, db: Database, hub: Hub,
                      questions: pykka.ActorProxy[Questions], broker: pykka.ActorProxy[Broker],
                      stop_agent: Callable[[str], Awaitable[Any]],
                      on_loop: Callable[[Callable[[], None]], None]) -> Costs:
    """``on_loop(fn)``: run ``fn`` on the IOLoop (from any thread)."""
    prices = load_prices(settings.prices)  # BadSetting: the daemon does not start
    ledger = Ledger.start(db).proxy()
    book = Handle(ledger)

    def record(row: CallRow) -> None:
        book.tell(Ledger.record_call, row)

    def turns(what: str, turn: int, agent: str, at: float, reported: float | None, extra: float) -> None:
        if what == "start":
            book.tell(Ledger.turn_started, turn, agent, at)
        else:
            book.tell(Ledger.turn_ended, turn, at, reported, extra)

    fleet = fleet_budget(settings)
    budgets: BudgetService | None = None
    spend = Spend(prices, lambda agent: budgets.limit_of(agent) if budgets is not None else None, fleet,
                  hard_cap_factor=settings.hard_cap_factor, record=record, turns=turns)
    budgets = BudgetService(paths, spend, hub, fleet, questions, broker, stop_agent,
                            settings.budget_question_ttl_seconds)
    spend.load(await book.ask(Ledger.load, time.time() - KEEP_SECONDS))
    unlisten = budgets.start()

    def follow(event: Event) -> None:  # any thread: hand over
        if isinstance(event, ContainerState):
            name = event.snapshot.name
            on_loop(lambda: budgets.reload(name) if budgets is not None else None)  # agent.json may be new
            if not event.snapshot.running:
                on_loop(lambda: spend.turn_ended(name))  # a stopped or dead harness runs no turn
        elif isinstance(event, ContainerRemoved):
            agent = event.agent
            on_loop(lambda: spend.forget(agent))

    unfollow = hub.subscribe(follow)

    def unsubscribe() -> None:
        unlisten()
        unfollow()

    return Costs(ledger, spend, budgets, unsubscribe)
