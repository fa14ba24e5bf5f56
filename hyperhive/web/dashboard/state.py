"""Gathering the dashboard's state: actor calls through the bridge (never a
blocking ``.get()`` on the loop) and file observations (badges, web ports,
cgroup usage, kept state) on an executor thread, then the pure views of
``dash_views``."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hyperhive.logs as logs
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.ports import PORT_FILE, read_port_file
from hyperhive.actors.questions import Questions
from hyperhive.actors.refs import ApprovalsRef, BrokerRef, CoordinatorRef, QuestionsRef
from hyperhive.actors.snapshots import ContainerSnapshot, SnapshotLike, as_snapshot
from hyperhive.badges import agent_badges, badge_key, env_login, spend_badges
from hyperhive.disk_use import observe_disks
from hyperhive.names import OPERATOR, AgentName
from hyperhive.observations import observations_for
from hyperhive.paths import StatePaths
from hyperhive.store.models import Message
from hyperhive.tombstones import Tombstone, list_tombstones
from hyperhive.web.dashboard import views
from hyperhive.web.dashboard.cost_source import CostSource
from hyperhive.web.dashboard.mirror import ASKS, SnapshotMirror, merge_snapshots
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.web.tables.turn_slots import TurnSlots
from hyperhive.wire import InboxRow
from hyperhive.workspace_status import observe_workspaces

if TYPE_CHECKING:
    from hyperhive.costs import Costs

__all__ = [
    "SECTIONS",
    "USAGE_KEYS",
    "Observed",
    "StateSource",
    "Usage",
    "UsageOf",
    "agent_port",
    "merge_snapshots",
    "observe_agents",
    "read_usage",
]

_log = logs.get("hyperhive.dashboard")

# "fleet": the fleet's cost today and its sparkline (issue 15; None without the cost parts)
SECTIONS = ("containers", "tombstones", "questions", "inbox", "approvals", "flow", "fleet")
USAGE_KEYS = ("memory_bytes", "memory_peak_bytes", "pids")
Usage = dict[str, int | None]
# The backend's ``usage(name)``: an agent's cgroup figures, None without a cgroup.
UsageOf = Callable[[AgentName], Mapping[str, Any] | None]


def agent_port(paths: StatePaths, name: AgentName) -> int | None:
    """The agent's web UI port: its sticky port (F20) in the daemon-owned
    ``agents/<name>/port``, the one the daemon relays. Never the harness's
    ``state/web.port``: the agent writes that, and could point the link at any
    page it likes. A registered (validated) name: see ``badges``."""
    return read_port_file(paths.agents / name / PORT_FILE)


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_usage(usage_of: UsageOf | None, snaps: Iterable[SnapshotLike]) -> dict[str, Usage | None]:
    """The cgroup figures of each *running* container (file reads: run off the
    IOLoop); a stopped one has no entry. One agent's failure costs only its figures."""
    out: dict[str, Usage | None] = {}
    if usage_of is None:
        return out
    for snap in map(as_snapshot, snaps):
        if not snap.running:
            continue
        name = AgentName(snap.name)
        try:
            raw = usage_of(name)
        except Exception:  # noqa: BLE001 - a cgroup gone underneath, a backend without one
            _log.debug("dashboard.usage_failed", agent=name, exc_info=True)
            raw = None
        out[name] = None if raw is None else {k: _int_or_none(raw.get(k)) for k in USAGE_KEYS}
    return out


@dataclass(frozen=True)
class Observed:
    badges: dict[str, list[str]]
    ports: dict[str, int | None]
    tombstones: list[Tombstone]
    usage: dict[str, Usage | None]  # running containers only
    workspaces: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # issue 14: each clone's status


def observe_agents(paths: StatePaths, snaps: Iterable[SnapshotLike], now: float,
                   with_tombstones: bool = True, known: Mapping[str, list[str]] | None = None,
                   usage_of: UsageOf | None = None,
                   known_usage: Mapping[str, Usage | None] | None = None,
                   known_workspaces: Mapping[str, dict[str, Any] | None] | None = None) -> Observed:
    """File reads for the given containers (run off the IOLoop); badges in
    ``known``, usage in ``known_usage`` and workspaces in ``known_workspaces``
    are taken as they are (the others' workspaces: a budgeted round of
    ``observe_workspaces``, sandboxed git)."""
    snapshots = [as_snapshot(s) for s in snaps]
    badges: dict[str, list[str]] = {}
    ports: dict[str, int | None] = {}
    live: set[str] = set()
    login = env_login()  # once, not per agent
    for s in snapshots:
        name = AgentName(s.name)
        live.add(name)
        cached = None if known is None else known.get(name)
        badges[name] = cached if cached is not None else agent_badges(
            paths, name, s.driver or "", sandboxed=s.sandboxed, logged_in_by_env=login)
        ports[name] = agent_port(paths, name) if s.running else None
    have = known_usage or {}
    usage = {n: have[n] for n in have if n in live}
    missing = [s for s in snapshots if s.name not in usage]
    usage.update(read_usage(usage_of, missing))
    usage = {s.name: usage[s.name] for s in snapshots if s.running and s.name in usage}
    tombs = list_tombstones(paths, live, now, workspaces=True) if with_tombstones else []
    known_ws = known_workspaces or {}
    workspaces = {n: known_ws[n] for n in known_ws if n in live}
    workspaces.update(observe_workspaces(paths, [AgentName(s.name) for s in snapshots if s.name not in workspaces]))
    return Observed(badges, ports, tombs, usage, workspaces)


def _latest_messages(limit: int) -> list[InboxRow]:
    q = Message.select().order_by(Message.id.desc()).limit(limit)
    return [InboxRow(m.id, m.sender, m.recipient, m.body, m.sent_at, m.delivered_at) for m in q]


class StateSource:
    """Builds sections on the IOLoop; keeps the message flow from hub events."""

    def __init__(self, paths: StatePaths, coordinator: CoordinatorRef, broker: BrokerRef, questions: QuestionsRef,
                 approvals: ApprovalsRef,
                 heartbeats: Heartbeats | None = None, slots: TurnSlots | None = None,
                 usage_of: UsageOf | None = None, costs: Costs | None = None) -> None:
        self.paths = paths
        self.coordinator = coordinator
        self.broker = broker
        self.questions = questions
        self.approvals = approvals
        self.heartbeats = heartbeats  # F41, read on the IOLoop thread (its owner)
        self.slots = slots  # F44, likewise
        # Issue 15: each row's cost today, budget and 24 h sparkline; the fleet's (None: no cost parts).
        self.costs = CostSource(costs) if costs is not None else None
        self.flow: deque[InboxRow] = deque(maxlen=views.FLOW_LIMIT)
        # Badges cost ~13 stats per agent (~80 ms at 1000 agents), each clone's
        # status (issue 14) a fingerprint and sandboxed git, each running agent's
        # cgroup figures (the backend's ``usage``) file reads: a state request
        # takes them from the state dir's cache, shared with the admin ``ls``
        # (`observations`); refresh_badges renews them off the request path, a
        # container's state change renews its own, a start reads its usage afresh.
        self.usage_of = usage_of
        self.observed = observations_for(paths)
        self.mirror = SnapshotMirror(coordinator)  # the Coordinator's snapshots, kept by events

    async def seed_flow(self) -> None:
        """Backfill the flow from the store once, at start (a read off the loop)."""
        rows = await asyncio.get_running_loop().run_in_executor(None, _latest_messages, views.FLOW_LIMIT)
        known = {m.id for m in self.flow}
        merged = sorted([*self.flow, *(r for r in rows if r.id not in known)], key=lambda m: m.id)
        self.flow.clear()
        self.flow.extend(merged[-views.FLOW_LIMIT:])

    def note_container(self, event: str, payload: SnapshotLike) -> None:
        """Keep the snapshot mirror current (on the IOLoop thread, in event order).
        ``payload``: the event's (a ``container.state``'s snapshot, or its wire dict)."""
        name = self.mirror.note(event, payload)
        if name is not None:  # added or removed: a new agent's (or a respawn's) figures are computed afresh
            for table in (self.observed.badges, self.observed.usage, self.observed.workspaces):
                table.drop([name])

    def latest(self, name: str) -> ContainerSnapshot | None:
        """The mirror's snapshot of ``name`` (None before the first ``ls``)."""
        return None if self.mirror.snaps is None else self.mirror.snaps.get(name)

    def snapshot_of(self, name: str) -> dict[str, Any] | None:
        """``latest``, wire form (the push's rows)."""
        snap = self.latest(name)
        return None if snap is None else snap.to_wire()

    def activity(self, snaps: Iterable[ContainerSnapshot]) -> dict[str, str | None]:
        """What each running agent is doing (F41), read now; ``queued`` while it
        waits for a turn slot (F44)."""
        if self.heartbeats is None:
            return {}
        queued = set(self.slots.queued) if self.slots is not None else set()
        return {s.name: self.heartbeats.view(s.name, s.running, s.name in queued)["activity"] for s in snaps}

    def resync(self) -> None:
        """Ask the Coordinator again on the next read (a safety net for the mirror)."""
        self.mirror.stale = True

    async def snapshots(self) -> list[ContainerSnapshot]:
        """The mirror (``Coordinator.ls`` when it is stale)."""
        return await self.mirror.snapshots()

    async def _observed_ls(self, with_tombstones: bool) -> tuple[list[ContainerSnapshot], Observed]:
        """The mirror and its observations, built again when a container came or went or
        a tombstone was purged meanwhile: the page keeps whichever of a heartbeat's answer
        and a push comes last, and one built from before the change must not win."""
        for _ in range(ASKS):
            changes = self.mirror.changes
            snaps = await self.snapshots()
            obs = await self._observe(snaps, with_tombstones)
            if self.mirror.changes == changes:
                break
        return snaps, obs

    async def containers(self) -> list[dict[str, Any]]:
        """The mirror, wire form (the /metrics scrape's)."""
        return [s.to_wire() for s in await self.snapshots()]

    def note_message(self, wire: Mapping[str, Any]) -> InboxRow:
        row = InboxRow.from_wire(dict(wire))
        self.flow.append(row)
        return row

    @property
    def badges(self) -> dict[str, list[str]]:
        return self.observed.badges.values()

    @property
    def usage(self) -> dict[str, Usage | None]:
        return self.observed.usage.values()

    @property
    def workspaces(self) -> dict[str, dict[str, Any] | None]:
        return self.observed.workspaces.values()

    async def _observe(self, snaps: list[ContainerSnapshot], with_tombstones: bool, cached: bool = True,
                       fresh_usage: bool = False) -> Observed:
        """Observe off the loop. Badges and workspaces come from the cache (of any
        age) unless not ``cached``, usage unless ``fresh_usage`` (an agent not in
        it, one that just started, is read now); what was computed goes back."""
        now, at, cache = time.time(), self.observed.clock(), self.observed
        login = env_login()
        keys = {s.name: badge_key(s.driver, s.sandboxed, login) for s in snaps}
        runs = {s.name: s.pid for s in snaps if s.running}
        known = cache.badges.known(keys.items(), any_age=True) if cached else {}
        known_ws = cache.workspaces.known(((s.name, None) for s in snaps), any_age=True) if cached else {}
        known_usage = {} if fresh_usage else cache.usage.known(runs.items(), any_age=True)
        obs = await asyncio.get_running_loop().run_in_executor(
            None, observe_agents, self.paths, snaps, now, with_tombstones, known, self.usage_of, known_usage,
            known_ws)
        # One in the middle of a lifecycle verb is not cached: its files may be changing under the verb.
        settled = {s.name for s in snaps if s.transient is None}
        cache.badges.put({n: (keys[n], b) for n, b in obs.badges.items() if n in settled and n not in known}, at)
        cache.workspaces.put({n: (None, w) for n, w in obs.workspaces.items() if n in settled and n not in known_ws},
                             at)
        cache.usage.put({n: (runs[n], u) for n, u in obs.usage.items() if n not in known_usage}, at)
        # A stopped agent leaves the cache: its next start reads afresh.
        cache.usage.drop(s.name for s in snaps if s.name not in obs.usage)
        return obs

    async def refresh_badges(self) -> None:
        """Recompute every agent's badges, cgroup usage and workspace
        (BADGE_REFRESH_SECONDS apart, from the app); the gone ones leave the cache."""
        snaps = await self.snapshots()
        await self._observe(snaps, with_tombstones=False, cached=False, fresh_usage=True)
        live = {s.name for s in snaps}
        for table in (self.observed.badges, self.observed.usage, self.observed.workspaces):
            table.drop([n for n in table.values() if n not in live])

    async def read_usage(self, snaps: Iterable[SnapshotLike]) -> dict[str, Usage | None]:
        """Fresh cgroup figures of the running ones among ``snaps`` (for a scrape), off the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, read_usage, self.usage_of, list(snaps))

    async def sections(self, wanted: Iterable[str]) -> dict[str, Any]:
        """The named sections, freshly built; actor calls run concurrently."""
        want = set(wanted)
        out: dict[str, Any] = {}
        jobs: dict[str, Any] = {}
        if want & {"containers", "tombstones"}:
            jobs["ls"] = self._observed_ls("tombstones" in want)
            jobs["stats"] = Handle(self.broker).ask(Broker.stats)
        if "questions" in want:
            jobs["questions"] = Handle(self.questions).ask(Questions.list)
        if "approvals" in want:
            jobs["approvals"] = Handle(self.approvals).ask(Approvals.list)
        if "inbox" in want:
            jobs["inbox"] = Handle(self.broker).ask(Broker.recent, OPERATOR, views.INBOX_LIMIT)
        if want & {"containers", "fleet"} and self.costs is not None:
            jobs["series"] = self.costs.refresh()
        results = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
        now = time.time()
        if "ls" in results:
            snaps, obs = results["ls"]
            if "containers" in want:
                cells = self.cost_cells(snaps)
                out["containers"] = views.build_container_views(
                    snaps, results["stats"], _with_spend(obs.badges, cells), obs.ports, now,
                    self.activity(snaps), obs.usage, obs.workspaces, cells,
                    observe_disks(self.paths, [s.name for s in snaps]))  # a cache read (issue 16)
            if "tombstones" in want:
                out["tombstones"] = views.build_tombstone_views(obs.tombstones)
            # Storage faults (issue 16): ``{"failures": {op: n}, "failing": cause or None}``.
            out["storage"] = results["stats"].get("storage")
        if "questions" in want:
            out["questions"] = views.build_question_views(results["questions"], now)
        if "approvals" in want:
            out["approvals"] = views.build_approval_views(results["approvals"])
        if "inbox" in want:
            out["inbox"] = views.build_inbox_views(results["inbox"])
        if "flow" in want:
            out["flow"] = views.build_flow_views(self.flow)
        if "fleet" in want:
            out["fleet"] = self.costs.fleet() if self.costs is not None else None
        return out

    def cost_cells(self, snaps: Iterable[ContainerSnapshot]) -> dict[str, dict[str, Any]]:
        """Each agent's cost cell (issue 15), read now from the spend table; none without the cost parts."""
        return self.costs.cells(s.name for s in snaps) if self.costs is not None else {}

    async def snapshot(self) -> dict[str, Any]:
        state = await self.sections(SECTIONS)
        return {**state, "now": time.time()}

    async def container_rows(self, snaps: list[dict[str, Any]], cached: bool = False) -> list[dict[str, Any]]:
        """Rows for just these containers (a state change), not the whole list.
        ``snaps``: the push's, wire dicts (or snapshots). ``cached``: the files as
        last observed (a repaint for costs alone; issue 15), not read again."""
        snapshots = [as_snapshot(s) for s in snaps]
        if self.costs is not None:
            stats, _ = await asyncio.gather(Handle(self.broker).ask(Broker.stats), self.costs.refresh())
        else:
            stats = await Handle(self.broker).ask(Broker.stats)
        obs = await self._observe(snapshots, with_tombstones=False, cached=cached)
        now = time.time()
        activity = self.activity(snapshots)
        cells = self.cost_cells(snapshots)
        badges = _with_spend(obs.badges, cells)
        disks = observe_disks(self.paths, [s.name for s in snapshots])  # a cache read (issue 16)
        return [views.container_row(s, stats, badges.get(s.name, []), obs.ports.get(s.name), now,
                                    activity.get(s.name), obs.usage.get(s.name), obs.workspaces.get(s.name),
                                    cells.get(s.name), disks.get(s.name))
                for s in snapshots]


def _with_spend(badges: Mapping[str, list[str]], cells: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """The observed badges, with ``over-budget`` where the spend table says so (issue 15)."""
    if not cells:
        return dict(badges)
    return {n: [*badges.get(n, []), *spend_badges(cells.get(n))] for n in {*badges, *cells}}
