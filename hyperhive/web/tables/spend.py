"""The spend table (issue 15): what each agent and the fleet have spent, and
the budget gate, on the IOLoop thread.

Counted where it cannot be faked: every model call's usage comes from the
API gateway (`record`, at the end of each call), priced with the table of
`pricing`. A call to a model the table lacks is priced at the dearest price
the table knows: outside a turn at once (no report will come), in a turn
when it ends, at the CLI's reported cost if it reported one (never more than
the dearest price; meanwhile the gate counts it at the dearest). The Ledger
actor gets each row (a tell); the sums stay here, so the checks below cost
additions.

The gate:
- `wait_admitted` (the agent socket's ``turn_slot``, and its harness's system
  ``recv``, so no message is taken while it waits): returns once neither the
  agent nor the fleet is over budget;
- `refusal` (the gateway, before a model call): an agent past its hard cap is
  refused always; one over budget is refused outside a turn (its harness
  asks for no slot: it gets no model either);
- `cut` (the gateway, as a response streams): a call that takes the agent
  past its hard cap is cut, so a running turn ends there. The calls still in
  flight count with what their usage says so far (`cut` with the call, until
  `done`): many streams at once cannot each take the whole headroom.

Each rise in standing (`budgets.standing`: warn, over, capped), per agent or
for the fleet and per window, is reported once to ``on_standing`` (the
budget service: the operator's question, the events, the notify command).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import hyperhive.logs as logs
from hyperhive.budgets import Budget, Standing, money, standing
from hyperhive.pricing import KINDS, Price, cost_usd, price_for
from hyperhive.spend_core import KEEP_SECONDS, Account, Windows
from hyperhive.store.usage import TOKEN_COLUMNS, CallRow, Loaded

__all__ = ["FLEET", "Spend"]

_log = logs.get("hyperhive.spend")

FLEET = ""  # the fleet's account key
_LEVEL = {"ok": 0, "warn": 1, "over": 2, "capped": 3}
_ORDER: tuple[Standing, ...] = ("ok", "warn", "over", "capped")
OnStanding = Callable[[str, Standing, float, Budget], None]  # (agent or FLEET, standing, spent, limit)


class Spend:
    def __init__(self, prices: Mapping[str, Price], limit_of: Callable[[str], Budget | None],
                 fleet: Budget | None = None, *, hard_cap_factor: float = 1.5, warn_at: float = 0.8,
                 record: Callable[[CallRow], None] | None = None,
                 turns: Callable[[str, int, str, float, float | None, float], None] | None = None,
                 now: Callable[[], float] = time.time, wake_floor: float = 1.0) -> None:
        """``limit_of(agent)``: its budget as it stands (raised or not), None for
        none; ``record``/``turns``: the Ledger's tells (a call row; ("start" |
        "end", turn, agent, at, reported, the dollars counted for its unpriced calls));
        ``wake_floor``: the shortest the midnight timer is armed for (seconds)."""
        self.prices = prices
        self._limit_of = limit_of
        self.fleet = fleet
        self.hard_cap_factor = hard_cap_factor
        self.warn_at = warn_at
        self._record = record
        self._turns = turns
        self._now = now
        self._wake_floor = wake_floor
        self._accounts: dict[str, Account] = {FLEET: Account()}
        self._windows = Windows()
        # agent → (turn id, priced cost so far, its unpriced calls at the dearest known price)
        self._turn: dict[str, tuple[int, float, float]] = {}
        top = [max((float(getattr(p, k)) for p in prices.values()), default=0.0) for k in (*KINDS, "write_1h")]
        self._dearest = Price(top[0], top[1], top[2], top[3], top[4])
        self._next_turn = 1
        # who → (window start, highest level reported, the limit in dollars it was reported against)
        self._levels: dict[str, tuple[float, int, float | None]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._in_flight: dict[str, dict[object, float]] = {}  # agent → call → its cost so far
        self._timer: asyncio.TimerHandle | None = None
        self.on_standing: OnStanding | None = None

    def load(self, loaded: Loaded) -> None:
        """Start from the Ledger's record (at boot)."""
        fleet_calls: list[tuple[float, float]] = []
        for agent in {*loaded.calls, *loaded.before}:
            calls = loaded.calls.get(agent, [])
            self._accounts[agent] = Account.of(calls, loaded.before.get(agent, 0.0))
            fleet_calls += calls
        self._accounts[FLEET] = Account.of(sorted(fleet_calls), sum(loaded.before.values()))
        self._next_turn = loaded.last_turn + 1
        now = self._now()
        for who in list(self._accounts):
            self._levels[who] = (self._window_of(who, now), _LEVEL[self.standing(who)], self._usd(who))

    # --- reads ---------------------------------------------------------------------------
    def limit(self, who: str) -> Budget | None:
        return self.fleet if who == FLEET else self._limit_of(who)

    def spent(self, who: str, per: str = "day") -> float:
        account = self._accounts.get(who)
        if account is None:
            return 0.0
        return account.spent(per, self._windows.at(self._now()))  # type: ignore[arg-type]

    def standing(self, who: str) -> Standing:
        limit = self.limit(who)
        if limit is None:
            return "ok"
        return standing(self.spent(who, limit.per), limit, self.hard_cap_factor, self.warn_at)

    def blocked(self, agent: str) -> str | None:
        """Why ``agent`` may start no turn now (None: it may)."""
        for who in (agent, FLEET):
            if _LEVEL[self.standing(who)] >= _LEVEL["over"]:
                limit = self.limit(who)
                assert limit is not None
                name = "the fleet" if who == FLEET else agent
                return f"{name} is over its budget ({limit.text()}): {money(self.spent(who, limit.per))} spent"
        return None

    def agents(self) -> list[str]:
        """Every agent the table has an account of (the fleet's aside)."""
        return sorted(a for a in self._accounts if a != FLEET)

    def in_turn(self, agent: str) -> bool:
        return agent in self._turn

    def view(self, agent: str) -> dict[str, Any]:
        """For `hive ls` and the dashboard row."""
        limit = self.limit(agent)
        out: dict[str, Any] = {"today_usd": round(self.spent(agent, "day"), 6), "standing": self.standing(agent)}
        if limit is not None:
            out["budget"] = {**limit.to_wire(), "spent_usd": round(self.spent(agent, limit.per), 6)}
        out["over_budget"] = self.blocked(agent) is not None
        out["waiting"] = self.waiting(agent)  # its harness waits for the budget to start a turn
        return out

    # --- the gateway ----------------------------------------------------------------------
    def refusal(self, agent: str) -> str | None:
        for who in (agent, FLEET):
            limit = self.limit(who)
            if limit is None:
                continue
            s = standing(self.spent(who, limit.per) + self._pending(who), limit, self.hard_cap_factor, self.warn_at)
            if s == "capped" or (s == "over" and agent not in self._turn):
                why = self.blocked(agent) or self._capped(who, limit)
                return f"{why}; no model call until the operator raises it"
        return None

    def cut(self, agent: str, usage: Mapping[str, Any], call: object = None) -> str | None:
        """A call streaming ``usage`` so far: why it must stop (the hard cap), or None.
        ``call`` (the gateway's request): counted in flight with this usage until `done`."""
        extra = cost_usd(usage, price_for(usage.get("model"), self.prices) or self._dearest)
        if call is not None:
            self._in_flight.setdefault(agent, {})[call] = extra
            extra = 0.0  # in `_pending` now
        for who in (agent, FLEET):
            limit = self.limit(who)
            if limit is not None and self.spent(who, limit.per) + self._pending(who) + extra >= \
                    limit.usd * self.hard_cap_factor:
                return self._capped(who, limit)
        return None

    def done(self, agent: str, call: object) -> None:
        """The gateway's ``call`` ended (its usage comes to `record`)."""
        calls = self._in_flight.get(agent)
        if calls is not None:
            calls.pop(call, None)
            if not calls:
                del self._in_flight[agent]

    def _pending(self, who: str) -> float:
        """What ``who`` spends that the sums hold not yet: the calls in flight (their usage so
        far) and the running turns' calls to unpriced models (at the dearest price)."""
        if who == FLEET:
            return sum(sum(c.values()) for c in self._in_flight.values()) + sum(t[2] for t in self._turn.values())
        turn = self._turn.get(who)
        return sum(self._in_flight.get(who, {}).values()) + (turn[2] if turn is not None else 0.0)

    def _capped(self, who: str, limit: Budget) -> str:
        return f"{'the fleet' if who == FLEET else who} reached its hard cap " \
               f"({money(limit.usd * self.hard_cap_factor)}, {self.hard_cap_factor:g} x {limit.text()})"

    def record(self, agent: str, usage: Mapping[str, Any]) -> None:
        """One call's usage, from the gateway (at the end of the call)."""
        now = self._now()
        tokens = {col: int(usage.get(key) or 0) for key, col in TOKEN_COLUMNS.items()}
        price = price_for(usage.get("model"), self.prices)
        cost = None if price is None else cost_usd(usage, price)
        turn = self._turn.get(agent)
        source = None
        if cost is None and turn is None and any(tokens.values()):
            # Outside a turn no report will come: a model the table lacks costs the dearest price.
            cost, source = cost_usd(usage, self._dearest), "dearest"
        if self._record is not None and (any(tokens.values()) or cost):
            self._record(CallRow(agent, now, usage.get("model"), tokens, cost, turn[0] if turn else None,
                                 int(usage.get("status") or 0), source))
        if source is not None:
            _log.warning("spend.unpriced_model", agent=agent, model=usage.get("model"), at_dearest=cost)
        if cost is None:
            if any(tokens.values()):
                _log.warning("spend.unpriced_model", agent=agent, model=usage.get("model"))
                if turn is not None:
                    self._turn[agent] = (turn[0], turn[1], turn[2] + cost_usd(usage, self._dearest))
            return
        if turn is not None:
            self._turn[agent] = (turn[0], turn[1] + cost, turn[2])
        self._add(agent, now, cost)

    # --- turns (the agent socket) -------------------------------------------------------------
    async def wait_admitted(self, agent: str) -> None:
        while (why := self.blocked(agent)) is not None:
            if not self._waiters.get(agent):
                _log.info("spend.held", agent=agent, reason=why)
            fut = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(agent, []).append(fut)
            self._arm_midnight()
            try:
                await fut
            finally:
                waiting = self._waiters.get(agent, [])
                if fut in waiting:
                    waiting.remove(fut)

    def waiting(self, agent: str) -> bool:
        return bool(self._waiters.get(agent))

    def turn_started(self, agent: str) -> int:
        turn = self._next_turn
        self._next_turn += 1
        self._turn[agent] = (turn, 0.0, 0.0)
        if self._turns is not None:
            self._turns("start", turn, agent, self._now(), None, 0.0)
        return turn

    def turn_ended(self, agent: str, reported: float | None = None) -> None:
        turn = self._turn.pop(agent, None)
        if turn is None:
            return
        # The calls to a model the table lacks cost what the CLI reports beyond the priced ones, but
        # never more than at the dearest price known: an agent cannot drain the fleet's budget by lying.
        # With no report (a harness gone, a CLI that said nothing) they cost the dearest price.
        extra = 0.0
        if turn[2] and reported is not None and math.isfinite(reported):
            extra = min(max(0.0, reported - turn[1]), turn[2])
        elif turn[2] and reported is None:
            extra = turn[2]
        if self._turns is not None:
            self._turns("end", turn[0], agent, self._now(), reported, extra)
        if extra:
            self._add(agent, self._now(), extra)

    # --- changes from the operator ------------------------------------------------------------
    def changed(self, who: str | None = None) -> None:
        """A limit changed (raised, a new agent.json, a new day): standings are read
        again (a lower one is taken as is, a higher one reported), waiters re-checked.
        A new limit the spend is still over is reported again: its question is
        asked at the new limit (else its turns would wait with nobody asked)."""
        now = self._now()
        for w in ([who] if who is not None else list(self._accounts)):
            level, window, usd = _LEVEL[self.standing(w)], self._window_of(w, now), self._usd(w)
            seen_window, seen, seen_usd = self._levels.get(w, (window, 0, usd))
            if seen_window == window and level >= _LEVEL["over"] and seen_usd not in (None, usd):
                self._levels[w] = (window, _LEVEL["over"] - 1, usd)
                self._check(w, now)
            elif seen_window == window and level <= seen:
                self._levels[w] = (window, level, usd)
            else:
                self._check(w, now)
        self._wake()

    def forget(self, agent: str) -> None:
        self._turn.pop(agent, None)
        for fut in self._waiters.pop(agent, []):
            if not fut.done():
                fut.cancel()

    # --- internals ----------------------------------------------------------------------------
    def _add(self, agent: str, at: float, cost: float) -> None:
        for who in (agent, FLEET):
            self._accounts.setdefault(who, Account()).add(at, cost, at)
        for who in (agent, FLEET):
            self._check(who, at)

    def _usd(self, who: str) -> float | None:
        limit = self.limit(who)
        return None if limit is None else limit.usd

    def _window_of(self, who: str, now: float) -> float:
        limit = self.limit(who)
        return self._windows.at(now).start(limit.per) if limit is not None else 0.0

    def _check(self, who: str, now: float) -> None:
        limit = self.limit(who)
        if limit is None:
            return
        s = self.standing(who)
        window = self._window_of(who, now)
        seen_window, seen, _ = self._levels.get(who, (window, 0, limit.usd))
        if seen_window != window:
            seen = 0
        if _LEVEL[s] > seen:
            self._levels[who] = (window, _LEVEL[s], limit.usd)
            spent = self.spent(who, limit.per)
            for level in _ORDER[seen + 1:_LEVEL[s] + 1]:  # each level crossed, in order: one call can pass them all
                _log.info("spend.standing", who=who or "fleet", standing=level, spent=round(spent, 6),
                          budget=limit.usd, per=limit.per)
                if self.on_standing is not None:
                    try:
                        self.on_standing(who, level, spent, limit)
                    except Exception:  # noqa: BLE001 - a listener never breaks the count
                        _log.exception("spend.listener_failed")

    def _wake(self) -> None:
        for agent, futs in list(self._waiters.items()):
            if self.blocked(agent) is None:
                for fut in futs:
                    if not fut.done():
                        fut.set_result(None)

    def _arm_midnight(self) -> None:
        """While turns wait, wake them at the next local midnight (a new day's or week's budget)."""
        if self._timer is not None:
            return
        now = self._now()
        left = max(self._wake_floor, self._windows.at(now).until - now)

        def fire() -> None:
            self._timer = None
            self.changed()
            if any(self._waiters.values()):
                self._arm_midnight()

        self._timer = asyncio.get_running_loop().call_later(min(left, KEEP_SECONDS), fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
