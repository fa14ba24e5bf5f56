"""The dashboard's side of the cost parts (issue 15), on the IOLoop thread.

Today's cost, the budget and the standing come from the spend table, read
at each build (additions, no I/O). The sparklines' hourly series comes from
the Ledger (one grouped query over every agent's last 24 hours, on its
thread), kept here until the fleet's total in the spend table moves (a call
was priced, a turn's reported cost came) or the hour turns; reads that come
while one is on its way share it. The Ledger has every row by then: the
spend table tells it each one before it adds it up. A Ledger that cannot
answer leaves the last series in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle
from hyperhive.actors.ledger import Ledger
from hyperhive.budgets import window_start
from hyperhive.web.dashboard.cost_views import (
    BUCKET_SECONDS,
    BUCKETS,
    cost_cell,
    fleet_series,
    reported_agents,
    spark_cell,
    spark_since,
)
from hyperhive.web.tables.spend import FLEET

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = ["CostSource"]

_log = logs.get("hyperhive.dashboard")


class CostSource:
    def __init__(self, costs: Costs, now: Callable[[], float] = time.time) -> None:
        self.spend = costs.spend
        self._ledger = Handle(costs.ledger)
        self._now = now
        self._series: dict[str, list[float]] = {}
        self._reported: set[str] = set()
        self._since: float | None = None
        self._seen: float | None = None  # the fleet's total the series was read at
        self._loading: asyncio.Task[None] | None = None
        # Each agent's sparkline as made from this series (most rows' builds find it here).
        self._sparks: dict[str, dict[str, str]] = {}

    def _stale(self, since: float) -> bool:
        return self._since != since or self._seen != self.spend.spent(FLEET, "total")

    async def refresh(self) -> None:
        """The series as of now (the cached one unless a cost came or the hour turned)."""
        since = spark_since(self._now())
        if not self._stale(since):
            return
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load(since))
        await asyncio.shield(self._loading)

    async def _load(self, since: float) -> None:
        seen = self.spend.spent(FLEET, "total")  # a cost counted from now on is read by the next load
        try:
            series, summary = await asyncio.gather(
                self._ledger.ask(Ledger.series, since, BUCKET_SECONDS, BUCKETS),
                self._ledger.ask(Ledger.summary, window_start("day", self._now())))
        except Exception:  # noqa: BLE001 - the cells keep the last series; the next read retries
            _log.exception("dashboard.series_failed")
            return
        self._series, self._reported, self._since, self._seen = series, reported_agents(summary), since, seen
        self._sparks = {}

    def _spark(self, who: str) -> dict[str, str]:
        made = self._sparks.get(who)
        if made is None:
            series = fleet_series(self._series) if who == FLEET else self._series.get(who)
            made = self._sparks[who] = spark_cell(series, "the fleet" if who == FLEET else who)
        return made

    def cells(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each agent's cost cell, from the series as last refreshed."""
        return {n: cost_cell(self.spend.view(n), None, reported=n in self._reported,
                             spark=self._spark(n))
                for n in names}

    def fleet(self) -> dict[str, Any]:
        """The fleet's cell: every agent's spend (destroyed ones too), its budget if it has one."""
        return cost_cell(self.spend.view(FLEET), None, reported=bool(self._reported),
                         spark=self._spark(FLEET))
