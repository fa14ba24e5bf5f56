"""The usage tables' reads and writes (issue 15): model calls, turns and the
archive the retention sweep folds old rows into. Called on the Ledger actor's
thread only; every write is one short IMMEDIATE transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from peewee import JOIN, Database, fn

from hyperhive.store.models import ModelCall, TurnRecord, UsageArchive

__all__ = [
    "TOKEN_COLUMNS", "CallRow", "Loaded", "archive_batch", "end_turn", "insert_call", "insert_calls", "load",
    "series",
    "start_turn", "summary",
]

# Usage keys of the Messages API → the column each is stored in.
TOKEN_COLUMNS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
                 "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
NOT_PRICED = ("reported", "dearest")  # costs not from the price table (summary's reported_calls)


@dataclass(frozen=True)
class CallRow:
    agent: str
    at: float
    model: str | None
    tokens: dict[str, int]  # by column name (KINDS)
    cost_usd: float | None
    turn: int | None
    status: int
    source: str | None = None  # how the cost was had: "priced" (the table; the default), "dearest" (unpriced)


def _source(row: CallRow) -> str | None:
    return None if row.cost_usd is None else row.source or "priced"


def insert_call(db: Database, row: CallRow) -> int:
    with db.atomic():
        call = ModelCall.create(
            agent=row.agent, at=row.at, model=row.model, cost_usd=row.cost_usd, turn=row.turn, status=row.status,
            cost_source=_source(row), **{k: row.tokens.get(k, 0) for k in KINDS})
    return int(call.id)


def insert_calls(db: Database, rows: Iterable[CallRow]) -> int:
    """Many calls in one statement (the Ledger's batch; call it inside its transaction)."""
    values = [{"agent": r.agent, "at": r.at, "model": r.model, "cost_usd": r.cost_usd, "turn": r.turn,
               "status": r.status, "cost_source": _source(r),
               **{k: r.tokens.get(k, 0) for k in KINDS}} for r in rows]
    for i in range(0, len(values), 200):  # well under sqlite's bound variables per statement
        ModelCall.insert_many(values[i:i + 200]).execute()
    return len(values)


def start_turn(db: Database, turn: int, agent: str, at: float) -> None:
    with db.atomic():
        TurnRecord.insert(id=turn, agent=agent, started_at=at).on_conflict_ignore().execute()


def end_turn(db: Database, turn: int, at: float, reported: float | None, extra: float = 0.0) -> None:
    """Close the turn with the CLI's reported cost; ``extra`` (what the spend
    table counted for the turn's calls to models the price table lacks: the
    report beyond the priced calls, bounded; with no report, the dearest
    price) is shared out evenly over those calls ("reported", "dearest")."""
    with db.atomic():
        TurnRecord.update(ended_at=at, reported_cost_usd=reported).where(TurnRecord.id == turn).execute()
        if reported is None and not extra:
            return
        unpriced = [c.id for c in ModelCall.select(ModelCall.id).where(
            (ModelCall.turn == turn) & ModelCall.cost_usd.is_null())]
        if unpriced:
            ModelCall.update(cost_usd=max(0.0, extra) / len(unpriced),
                             cost_source="reported" if reported is not None else "dearest").where(
                ModelCall.id.in_(unpriced)).execute()


def _sums(rows: Iterable[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r.agent] = {"calls": int(r.calls or 0), "cost_usd": float(r.cost or 0.0),
                        "reported_calls": int(r.reported or 0), "unpriced_calls": int(r.unpriced or 0),
                        "tokens": {k.removesuffix("_tokens"): int(getattr(r, k) or 0) for k in KINDS}}
    return out


def summary(db: Database, since: float | None) -> dict[str, dict[str, Any]]:
    """Per agent: calls, tokens by kind, cost, turns, since ``since`` (None: all,
    the archive included)."""
    q = ModelCall.select(
        ModelCall.agent, fn.COUNT(ModelCall.id).alias("calls"), fn.SUM(ModelCall.cost_usd).alias("cost"),
        fn.SUM(ModelCall.cost_source.in_(NOT_PRICED)).alias("reported"),
        fn.SUM(ModelCall.cost_usd.is_null()).alias("unpriced"),
        *(fn.SUM(getattr(ModelCall, k)).alias(k) for k in KINDS))
    if since is not None:
        q = q.where(ModelCall.at >= since)
    out = _sums(_Row(r) for r in _dicts(q.group_by(ModelCall.agent)))
    turns = TurnRecord.select(TurnRecord.agent, fn.COUNT(TurnRecord.id).alias("n"))
    if since is not None:
        turns = turns.where(TurnRecord.started_at >= since)
    for t in _dicts(turns.group_by(TurnRecord.agent)):
        out.setdefault(t["agent"], _sums([_Zero(t["agent"])])[t["agent"]])["turns"] = int(t["n"])
    if since is None:
        for a in UsageArchive.select():
            s = out.setdefault(a.agent, _sums([_Zero(a.agent)])[a.agent])
            s["calls"] += int(a.calls)
            s["reported_calls"] += int(a.reported_calls)
            s["unpriced_calls"] += int(a.unpriced_calls)
            s["turns"] = s.get("turns", 0) + int(a.turns)
            s["cost_usd"] += float(a.cost_usd)
            for k in KINDS:
                s["tokens"][k.removesuffix("_tokens")] += int(getattr(a, k))
    for s in out.values():
        s.setdefault("turns", 0)
    return out


def _dicts(q: Any) -> Iterable[dict[str, Any]]:
    """A query's rows as dicts (the stubs type them as model instances)."""
    return cast("Iterable[dict[str, Any]]", q.dicts())


class _Row:
    """A row of `summary`'s grouped query, by attribute."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


@dataclass
class _Zero:
    agent: str
    calls: int = 0
    cost: float = 0.0
    reported: int = 0
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def series(db: Database, since: float, bucket: float, buckets: int) -> dict[str, list[float]]:
    """Per agent, the cost of each ``bucket``-second slice from ``since`` (oldest first)."""
    if not bucket > 0 or buckets < 0:  # sqlite divides by 0 into NULL: no slot at all
        raise ValueError(f"series: bucket must be > 0 seconds and buckets >= 0, got {bucket!r}, {buckets!r}")
    slot = ((ModelCall.at - since) / bucket).cast("INTEGER")  # fn.CAST(x, "INTEGER") is no SQL
    q = (ModelCall.select(ModelCall.agent, slot.alias("slot"), fn.SUM(ModelCall.cost_usd).alias("cost"))
         .where(ModelCall.at >= since).group_by(ModelCall.agent, slot))
    out: dict[str, list[float]] = {}
    for r in _dicts(q):
        i = int(r["slot"])
        if 0 <= i < buckets:
            out.setdefault(r["agent"], [0.0] * buckets)[i] += float(r["cost"] or 0.0)
    return out


@dataclass
class Loaded:
    """What the daemon's spend table starts from."""

    calls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (at, cost) since the cutoff
    before: dict[str, float] = field(default_factory=dict)  # each agent's cost before the cutoff (and archived)
    last_turn: int = 0


def load(db: Database, cutoff: float) -> Loaded:
    out = Loaded()
    q = (ModelCall.select(ModelCall.agent, ModelCall.at, ModelCall.cost_usd)
         .where((ModelCall.at >= cutoff) & ModelCall.cost_usd.is_null(False)).order_by(ModelCall.at))
    for r in _dicts(q):
        out.calls.setdefault(r["agent"], []).append((float(r["at"]), float(r["cost_usd"])))
    older = (ModelCall.select(ModelCall.agent, fn.SUM(ModelCall.cost_usd).alias("cost"))
             .where(ModelCall.at < cutoff).group_by(ModelCall.agent))
    for r in _dicts(older):
        out.before[r["agent"]] = out.before.get(r["agent"], 0.0) + float(r["cost"] or 0.0)
    for a in UsageArchive.select():
        out.before[a.agent] = out.before.get(a.agent, 0.0) + float(a.cost_usd)
    # The calls' turn ids too: a turn row that never made it (or was archived) must not be reused
    # while calls name it (its end would price them).
    out.last_turn = max(int(TurnRecord.select(fn.MAX(TurnRecord.id)).scalar() or 0),
                        int(ModelCall.select(fn.MAX(ModelCall.turn)).scalar() or 0))
    return out


def _folded() -> dict[str, float]:
    return {"calls": 0, "reported_calls": 0, "unpriced_calls": 0, "cost_usd": 0.0, "until": 0.0,
            **dict.fromkeys(KINDS, 0)}


def archive_batch(db: Database, cutoff: float, batch: int = 2000) -> tuple[int, bool]:
    """Fold up to ``batch`` calls older than ``cutoff`` (and the turns they
    ended, older too) into the archive, then delete them: ``(deleted, more)``."""
    with db.atomic():
        rows = list(ModelCall.select().where(ModelCall.at < cutoff).order_by(ModelCall.id).limit(batch))
        per: dict[str, dict[str, float]] = {}
        for r in rows:
            s = per.setdefault(r.agent, _folded())
            s["calls"] += 1
            s["reported_calls"] += r.cost_source in NOT_PRICED
            s["unpriced_calls"] += r.cost_usd is None
            s["cost_usd"] += float(r.cost_usd or 0.0)
            s["until"] = max(s["until"], float(r.at))
            for k in KINDS:
                s[k] += int(getattr(r, k))
        turns = list(TurnRecord.select(TurnRecord.id, TurnRecord.agent).join(
            ModelCall, JOIN.LEFT_OUTER, on=(ModelCall.turn == TurnRecord.id) & (ModelCall.at >= cutoff))
            .where((TurnRecord.started_at < cutoff) & ModelCall.id.is_null()).limit(batch))
        for t in turns:
            per.setdefault(t.agent, _folded())
            per[t.agent]["turns"] = per[t.agent].get("turns", 0) + 1
        for agent, s in per.items():
            a = UsageArchive.get_or_none(UsageArchive.agent == agent) or UsageArchive.create(agent=agent)
            a.calls += int(s["calls"])
            a.reported_calls += int(s["reported_calls"])
            a.unpriced_calls += int(s["unpriced_calls"])
            a.turns += int(s.get("turns", 0))
            a.cost_usd += s["cost_usd"]
            a.until = max(a.until, s["until"])
            for k in KINDS:
                setattr(a, k, getattr(a, k) + int(s[k]))
            a.save()
        if rows:
            ModelCall.delete().where(ModelCall.id.in_([r.id for r in rows])).execute()
        if turns:
            TurnRecord.delete().where(TurnRecord.id.in_([t.id for t in turns])).execute()
    return len(rows), len(rows) == batch or len(turns) == batch
