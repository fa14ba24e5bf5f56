"""Prometheus ``/metrics`` (F45) on the daemon's own registry (never the
process-global one, so two daemons in one process never share counters).

Counters move with hub events (on the IOLoop thread, handed over by the
Pusher); gauges are read from the actors at scrape time, and each running
agent's cgroup figures (memory now and at peak, processes) from the backend,
read off the IOLoop at scrape time too.

Usage (issue 15): ``hyperhive_tokens_total{agent,kind,model}`` counts the
tokens of each call the API gateway saw (kind: input, output, cache_read,
cache_write), and ``hyperhive_cost_usd_total{agent}`` what they cost at the
daemon's price table. A call to a model the table lacks adds tokens but no
cost here (`hive usage` counts its turn's reported cost instead).

Disk (issue 16): ``hyperhive_agent_disk_bytes{agent}`` is what each agent's
whole dir takes, as last measured (`disk_use`; none until it is; a walk that
stopped at a bound gives a lower bound).

Storage faults (issue 16): ``hyperhive_storage_failures_total{op}`` counts the
commits the store could not make (disk full, read-only, I/O error), moved at
scrape time by what the Broker counted since the last scrape, and
``hyperhive_storage_failing`` is 1 while the last commit failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pykka
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import hyperhive.logs as logs
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.events import (
    ApprovalQueued,
    ApprovalResolved,
    ContainerCrash,
    ContainerKilled,
    Event,
    GatewayUsage,
    MessageSent,
    MessageWoke,
    ProxyRefused,
    QuestionAsked,
    QuestionResolved,
    VacuumSwept,
)
from hyperhive.actors.questions import Questions
from hyperhive.names import OPERATOR
from hyperhive.pricing import DEFAULT_PRICES, USAGE_KEYS, Price, cost_usd, price_for

__all__ = ["Metrics"]

_log = logs.get("hyperhive.metrics")
T = TypeVar("T")


MODEL_LABEL_MAX = 64  # a model name longer than this is cut (it comes from the upstream's reply)
TOKENS_MAX = 2**63 - 1  # one call's count of a kind is taken as at most this (a float holds it)


def _model_label(model: Any) -> str:
    if not isinstance(model, str) or not model:
        return "unknown"
    return "".join(c if c.isprintable() else "?" for c in model[:MODEL_LABEL_MAX])


async def _read(what: str, aw: Awaitable[T]) -> T | None:
    """``aw``'s value; None (logged) when it failed."""
    try:
        return await aw
    except Exception as exc:  # noqa: BLE001 - the other figures are still served
        _log.warning("metrics.read_failed", what=what, error=f"{type(exc).__name__}: {exc}")
        return None


class Metrics:
    def __init__(self, prices: Mapping[str, Price] = DEFAULT_PRICES) -> None:
        self.prices = prices
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sent = Counter("hyperhive_messages_sent", "messages committed by the broker", registry=r)
        self.to_operator = Counter("hyperhive_messages_to_operator", "messages addressed to the operator",
                                   registry=r)
        self.woke = Counter("hyperhive_messages_woke_parked_recv",
                            "messages handed to a parked recv in their own commit", registry=r)
        self.crashes = Counter("hyperhive_container_crashes", "harness exits nobody asked for", registry=r)
        self.kills = Counter("hyperhive_container_kills", "kills by the operator or the manager", registry=r)
        self.questions_asked = Counter("hyperhive_questions_asked", "operator questions asked", registry=r)
        self.questions_resolved = Counter("hyperhive_questions_resolved", "operator questions resolved",
                                          ["how"], registry=r)
        self.approvals_queued = Counter("hyperhive_approvals_queued", "approvals queued", ["kind"], registry=r)
        self.approvals_resolved = Counter("hyperhive_approvals_resolved", "approvals decided",
                                          ["outcome"], registry=r)
        self.wake_latency = Histogram(
            "hyperhive_wake_latency_seconds", "from a send reaching the broker to the parked recv it woke",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5), registry=r)
        self.vacuumed = Counter("hyperhive_vacuum_removed", "rows removed by retention sweeps", ["what"],
                                registry=r)
        self.proxy_refused = Counter("hyperhive_proxy_refused", "connections the egress proxy refused",
                                     ["agent"], registry=r)
        self.gateway_requests = Counter("hyperhive_gateway_requests", "model API requests through the gateway",
                                        ["agent", "status"], registry=r)
        self.tokens = Counter("hyperhive_tokens", "model tokens through the gateway, by kind and model",
                              ["agent", "kind", "model"], registry=r)
        self.cost = Counter("hyperhive_cost_usd", "US dollars of the gateway's model calls at the price table",
                            ["agent"], registry=r)
        self.memory = Gauge("hyperhive_agent_memory_bytes", "memory of each agent's cgroup", ["agent", "kind"],
                            registry=r)
        self.pids = Gauge("hyperhive_agent_pids", "processes in each agent's cgroup", ["agent"], registry=r)
        self.disk = Gauge("hyperhive_agent_disk_bytes", "disk each agent's dir takes, as last measured "
                          "(a lower bound where its walk stopped at a bound)", ["agent"], registry=r)
        self.containers = Gauge("hyperhive_containers", "containers by state", ["state"], registry=r)
        self.parked = Gauge("hyperhive_parked_recvs", "recvs parked in the broker", ["kind"], registry=r)
        self.undelivered = Gauge("hyperhive_undelivered_messages", "messages not yet received", registry=r)
        self.pending_questions = Gauge("hyperhive_pending_questions", "questions waiting", registry=r)
        self.storage_failures = Counter("hyperhive_storage_failures",
                                        "commits the store could not make (disk full, read-only, I/O error)",
                                        ["op"], registry=r)
        self._storage_seen: dict[str, int] = {}  # the Broker's counts at the last scrape
        self.storage_failing = Gauge("hyperhive_storage_failing", "1 while the last commit failed", registry=r)
        self.pending_approvals = Gauge("hyperhive_pending_approvals", "approvals waiting", registry=r)
        self.node_agents = Gauge("hyperhive_node_agents", "agents whose harness runs on each node (the ray "
                                 "backend: its Ray node id)", ["node"], registry=r)

    def on_event(self, event: Event) -> None:
        """Count one hub event (called on the IOLoop thread)."""
        match event:
            case MessageSent(row=row):
                self.sent.inc()
                if row.get("to") == OPERATOR:
                    self.to_operator.inc()
                if row.get("delivered_at") is not None:
                    self.woke.inc()
            case MessageWoke(seconds=seconds):
                self.wake_latency.observe(float(seconds))
            case VacuumSwept(messages=messages):
                self.vacuumed.labels(what="messages").inc(int(messages))
            case ProxyRefused(agent=agent):
                self.proxy_refused.labels(agent=agent).inc()
            case GatewayUsage(agent=agent, usage=usage):
                self.gateway_requests.labels(agent=agent, status=str(usage.get("status"))).inc()
                self._count_usage(agent, usage)
            case ContainerCrash():
                self.crashes.inc()
            case ContainerKilled():
                self.kills.inc()
            case QuestionAsked():
                self.questions_asked.inc()
            case QuestionResolved(answered=answered):
                self.questions_resolved.labels(how=str(answered.get("how"))).inc()
            case ApprovalQueued(view=view):
                self.approvals_queued.labels(kind=str(view.get("kind"))).inc()
            case ApprovalResolved(view=view):
                self.approvals_resolved.labels(outcome=str(view.get("status"))).inc()

    def _count_usage(self, agent: str, usage: Mapping[str, Any]) -> None:
        model = _model_label(usage.get("model"))
        for kind, key in USAGE_KEYS.items():
            n = usage.get(key)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                self.tokens.labels(agent=agent, kind=kind, model=model).inc(min(n, TOKENS_MAX))
        price = price_for(usage.get("model"), self.prices)
        if price is not None:
            cost = cost_usd(usage, price)
            if cost > 0:
                self.cost.labels(agent=agent).inc(cost)

    def _count_storage(self, storage: Mapping[str, Any]) -> None:
        for op, n in (storage.get("failures") or {}).items():
            seen = self._storage_seen.get(op, 0)
            if n > seen:
                self.storage_failures.labels(op=op).inc(n - seen)
            self._storage_seen[op] = n
        self.storage_failing.set(1 if storage.get("failing") else 0)

    async def scrape(self, containers: Callable[[], Awaitable[list[dict[str, Any]]]],
                     broker: pykka.ActorProxy[Broker], questions: pykka.ActorProxy[Questions],
                     approvals: pykka.ActorProxy[Approvals],
                     usage_of: Callable[[list[dict[str, Any]]], Awaitable[Mapping[str, Any]]] | None = None,
                     disks: Callable[[list[str]], Mapping[str, Mapping[str, Any] | None]] | None = None,
                     nodes: Callable[[], Mapping[str, int]] | None = None) -> bytes:
        """Read the gauges (containers from the dashboard's snapshot mirror), then render the text format.
        ``usage_of(snaps)`` (``StateSource.read_usage``: file reads in an executor) gives each running
        agent's cgroup figures; without it, a snapshot's own ``usage`` is taken. ``disks(names)``
        (``disk_use.observe_disks``: a cache read) gives each agent's disk use; without it, a
        snapshot's own ``disk``. ``nodes()``: node → agents running there (the ray backend's
        ``nodes_in_use``, an in-memory read)."""
        # A read the store refuses (a full disk can fail even a new connection's pragmas) leaves
        # those gauges as they were: /metrics must answer while storage fails (issue 16).
        asks = (Handle(broker).ask(Broker.stats), Handle(questions).ask(Questions.list),
                Handle(approvals).ask(Approvals.list))
        got_snaps, got_stats, qs, aps = await asyncio.gather(
            _read("containers", containers()), _read("broker", asks[0]), _read("questions", asks[1]),
            _read("approvals", asks[2]))
        snaps, stats = got_snaps or [], got_stats or {}
        if usage_of is not None:
            figures = await usage_of(snaps)
            snaps = [{**s, "usage": figures.get(s["name"])} for s in snaps]
        by_state: dict[str, int] = {"running": 0, "stopped": 0, "crashed": 0, "hibernating": 0}
        for s in snaps:
            key = s.get("transient") or s.get("state") or "unknown"
            by_state[key] = by_state.get(key, 0) + 1
        self.containers.clear()
        for state, n in by_state.items():
            self.containers.labels(state=state).set(n)
        if disks is not None:
            measured = disks([s["name"] for s in snaps])
            snaps = [{**s, "disk": measured.get(s["name"])} for s in snaps]
        self.memory.clear()
        self.pids.clear()
        self.disk.clear()
        for s in snaps:
            usage = s.get("usage") or {}
            for kind, key in (("current", "memory_bytes"), ("peak", "memory_peak_bytes")):
                if usage.get(key) is not None:
                    self.memory.labels(agent=s["name"], kind=kind).set(usage[key])
            if usage.get("pids") is not None:
                self.pids.labels(agent=s["name"]).set(usage["pids"])
            disk = s.get("disk") or {}
            if isinstance(disk.get("bytes"), int):
                self.disk.labels(agent=s["name"]).set(disk["bytes"])
        if nodes is not None:
            self.node_agents.clear()
            for node, n in nodes().items():
                self.node_agents.labels(node=node).set(n)
        parked = stats.get("parked", {}).values()
        self.parked.labels(kind="tool").set(sum(p.get("tool", 0) for p in parked))
        self.parked.labels(kind="system").set(sum(p.get("system", 0) for p in parked))
        self.undelivered.set(sum(stats.get("undelivered", {}).values()))
        self._count_storage(stats.get("storage") or {})
        if qs is not None:
            self.pending_questions.set(len(qs.get("pending", [])))
        if aps is not None:
            self.pending_approvals.set(len(aps.get("pending", [])))
        return generate_latest(self.registry)
