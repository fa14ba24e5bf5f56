"""The operator's verbs on agents as a whole: spawn, destroy (with purge),
revive, purge a tombstone, the tombstones, ``ls`` and a container's journal."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.badges import agent_badges, badge_key, env_login
from hyperhive.disk_use import observe_disks
from hyperhive.journal import check_journal_request
from hyperhive.names import OPERATOR, AgentName, validate_name
from hyperhive.observations import observations_for
from hyperhive.paths import StatePaths
from hyperhive.web.dashboard.state import read_usage
from hyperhive.web.operator.checks import check_destroyable, check_spawnable, spawn_config, wire_snapshot
from hyperhive.web.operator.lifecycle import LIFECYCLE_TIMEOUT
from hyperhive.web.operator.placement import check_config_placement, check_spawn_placement
from hyperhive.web.rpc.ls_view import build_container_list
from hyperhive.web.tables.heartbeats import Heartbeats
from hyperhive.workspace import check_repo, with_repo
from hyperhive.workspace_pulls import Pulls
from hyperhive.workspace_status import observe_workspaces

if TYPE_CHECKING:
    from hyperhive.web.tables.spend import Spend

__all__ = ["JournalSource", "destroy", "journal", "ls", "observe_ls", "pull", "purge", "revive", "spawn",
           "tombstones"]


class JournalSource(Protocol):
    """What a backend offers: LocalBackend reads harness.log, NixosBackend runs journalctl."""

    def journal(self, name: AgentName, unit: str, lines: int) -> str: ...


async def spawn(coordinator: pykka.ActorProxy[Coordinator], name: object,
                allowed_recipients: list[str] | None = None, repo: object = None,
                paths: StatePaths | None = None, permissions: str | None = None,
                budget_usd: float | None = None, budget_per: str | None = None, *, backend: Any = None,
                placement: tuple[str | None, str | None, str | None] = (None, None, None)) -> dict[str, Any]:
    """Create an agent and start it, no approval (the CLI's spawn): ``{"container"}``.
    With ``repo``, its workspace is a clone of that repository (issue 14),
    checked here first (off the loop) when ``paths`` is given. ``placement``: the
    flags --cpus, --memory-mb, --resources as typed (issue 18), checked by ``backend``
    before anything is made (`check_spawn_placement`)."""
    agent = check_spawnable(name)
    cfg = with_repo(spawn_config(allowed_recipients, None, permissions, budget_usd, budget_per), repo)
    placed = await check_spawn_placement(backend, *placement)
    if placed is not None:
        cfg = dataclasses.replace(cfg, placement=placed)
    if cfg.repo is not None and paths is not None:
        await asyncio.get_running_loop().run_in_executor(None, check_repo, paths, cfg.repo)
    snap = await Handle(coordinator).within(LIFECYCLE_TIMEOUT).ask(Coordinator.spawn, agent, cfg)
    return {"container": wire_snapshot(snap)}


async def pull(pulls: Pulls, name: object) -> dict[str, Any]:
    """Fetch the agent's branch into the operator's repository now (also for a
    stopped agent, or a destroyed one whose state is kept): ``{"name",
    "branch", "commit", "ahead"}``. One pull at a time per agent: this one
    runs after any that is running."""
    return (await pulls.pull(validate_name(name))).to_wire()


async def destroy(coordinator: pykka.ActorProxy[Coordinator], name: object, purge: bool = False,
                  force: bool = False) -> dict[str, Any]:
    """Destroy a container, its dirs kept (a tombstone) unless ``purge``
    (refused while its clone holds work the operator's repo does not keep,
    unless ``force``; issue 14):
    ``{"container": {"name", "state": "destroyed", "purged": [paths]}, "destroyed": name, "purged": bool}``."""
    agent = check_destroyable(name)
    out = await Handle(coordinator).within(LIFECYCLE_TIMEOUT).ask(Coordinator.destroy_agent, agent, purge, force)
    return {"container": out, "destroyed": agent, "purged": purge}


async def revive(approvals: pykka.ActorProxy[Approvals], name: object, *, backend: Any = None) -> dict[str, Any]:
    """F18: a spawn approval that brings a tombstone back: ``{"approval_id"}``. With
    a backend that places agents (issue 18), the placement in the kept agent.json
    it would run with is checked against the cluster first (and again at approval):
    refused, nothing is queued."""
    agent = check_spawnable(name)
    if getattr(backend, "check", None) is not None:
        kept = await Handle(approvals).ask(Approvals.revive_config, agent)
        await check_config_placement(backend, kept, f"{agent}'s kept agent.json")
    return {"approval_id": await Handle(approvals).ask(Approvals.request_revive, OPERATOR, agent)}


async def purge(coordinator: pykka.ActorProxy[Coordinator], name: object, force: bool = False) -> dict[str, Any]:
    """Wipe a tombstone's state and applied dirs: ``{"name", "purged": [paths]}``;
    refused while its clone holds work the operator's repo does not keep, unless ``force``."""
    agent = validate_name(name)
    out = await Handle(coordinator).within(LIFECYCLE_TIMEOUT).ask(Coordinator.purge_tombstone, agent, force)
    return dict(out)


async def tombstones(coordinator: pykka.ActorProxy[Coordinator]) -> dict[str, Any]:
    """Kept state dirs with no live container, all of them: ``{"tombstones", "more": 0}``."""
    return {"tombstones": await Handle(coordinator).ask(Coordinator.tombstones), "more": 0}


def observe_ls(snaps: list[dict[str, Any]], paths: StatePaths | None, backend: Any = None) -> list[dict[str, Any]]:
    """Each snapshot with its cgroup ``usage`` (``{memory_bytes, memory_peak_bytes,
    pids}``, or None when not running or without a cgroup) and, given ``paths``,
    its ``badges``, ``workspace`` (its clone: branch, ahead, dirty) and ``disk``
    (its dir's disk use, `disk_use.DiskUse.to_wire`, from the meter's cache: None
    until first measured). Usage, badges and workspaces come from the state
    dir's shared cache (`observations`: the dashboard's round renews it every
    10 s) when fresh there and for the same inputs; the rest (a just-spawned or
    restarted agent, a stale entry) is computed now and put back. File reads and
    sandboxed git: run it off the IOLoop."""
    usage_of = getattr(backend, "usage", None)
    if paths is None:
        usage = read_usage(usage_of, snaps)
        return [{**s, "usage": usage.get(s["name"])} for s in snaps]
    cache = observations_for(paths)
    at = cache.clock()
    names = [s["name"] for s in snaps]
    runs = {s["name"]: s.get("pid") for s in snaps if s.get("state") == "running"}  # usage is keyed by the run
    usage = cache.usage.known(runs.items()) if usage_of is not None else {}  # a backend without cgroups: none
    read = read_usage(usage_of, [s for s in snaps if s["name"] in runs and s["name"] not in usage])
    cache.usage.put({n: (runs[n], u) for n, u in read.items()}, at)
    usage.update(read)
    login = env_login()
    keys = {s["name"]: badge_key(s.get("driver"), s.get("sandboxed", True), login) for s in snaps}
    # One in the middle of a lifecycle verb (spawning, starting …) is observed afresh, and not
    # cached: its files (config, applied, clone) may be changing under the verb.
    settled = [n for n, s in zip(names, snaps, strict=True) if not s.get("transient")]
    badges = cache.badges.known((n, keys[n]) for n in settled)
    if len(badges) < len(keys):
        new = {n: agent_badges(paths, AgentName(n), keys[n][0], sandboxed=keys[n][1], logged_in_by_env=login)
               for n in names if n not in badges}
        cache.badges.put({n: (keys[n], new[n]) for n in settled if n in new}, at)
        badges.update(new)
    # Each clone's status (issue 14): at most a few seconds of sandboxed git for the ones not cached.
    work = cache.workspaces.known((n, None) for n in settled)
    if len(work) < len(names):
        seen = observe_workspaces(paths, [AgentName(n) for n in names if n not in work])
        cache.workspaces.put({n: (None, seen[n]) for n in settled if n in seen}, at)
        work.update(seen)
    # Each agent's dir (issue 16): cached, walked on the meter's own thread when stale, never here.
    disks = observe_disks(paths, names)
    return [{**s, "usage": usage.get(s["name"]), "badges": badges[s["name"]], "workspace": work.get(s["name"]),
             "disk": disks.get(s["name"])} for s in snaps]


_SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(ContainerSnapshot))


def _wire(snap: ContainerSnapshot | dict[str, Any]) -> dict[str, Any]:
    """``wire_snapshot``, without ``asdict``'s deep copy (its fields are plain values: ~10 ms of 1000 rows)."""
    if not isinstance(snap, ContainerSnapshot):
        return snap
    out = {k: getattr(snap, k) for k in _SNAPSHOT_FIELDS}
    if out["node"] is None:  # as to_wire: only the ray backend's rows name a node
        del out["node"]
    return out


async def ls(coordinator: pykka.ActorProxy[Coordinator], broker: pykka.ActorProxy[Broker],
             beats: Heartbeats | None = None, queued: Collection[str] = (), paths: StatePaths | None = None,
             backend: Any = None, spend: Spend | None = None) -> dict[str, Any]:
    """Every container, manager first, with usage, badges, inbox figures and
    activity, and with ``spend`` (issue 15) each one's ``cost`` (today, budget,
    standing) and the ``over-budget`` badge: ``{"containers", "more": 0}``."""
    snaps = [_wire(s) for s in await Handle(coordinator).ask(Coordinator.ls)]
    # Badges and cgroup usage in one executor job: file reads, off the loop.
    seen = await asyncio.get_running_loop().run_in_executor(None, observe_ls, snaps, paths, backend)
    stats = await Handle(broker).ask(Broker.stats)
    # The spend table lives on the IOLoop, where this runs: read it now, not on the executor.
    costs = {s["name"]: spend.view(s["name"]) for s in seen} if spend is not None else None
    return {"containers": build_container_list(seen, stats, beats, queued, costs), "more": 0}


async def journal(coordinator: pykka.ActorProxy[Coordinator], backend: JournalSource, name: object,
                  unit: object = "harness", lines: object = 200) -> dict[str, Any]:
    """F23: a live container's log; the name is checked against the live
    containers before anything runs: ``{"name", "unit", "lines", "text"}``."""
    agent = validate_name(name)
    live = {agent} if await Handle(coordinator).ask(Coordinator.has_agent, agent) else set()
    agent, checked, count = check_journal_request(agent, unit, lines, live)
    # A file read or a journalctl run: off the IOLoop.
    text = await asyncio.get_running_loop().run_in_executor(None, backend.journal, agent, checked, count)
    return {"name": agent, "unit": checked, "lines": count, "text": text}

