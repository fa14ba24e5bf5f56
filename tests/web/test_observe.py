"""What the daemon observes per agent for its operator surfaces, on a real
temp state dir: the web UI link's port (the daemon's, never the agent's),
badges, cgroup usage (a plain function stands in for the backend's
``usage``: an input), the dashboard's usage cache, ``hive ls``'s
observation and table, and the /metrics gauges."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyperhive.cli_ls import format_ls
from hyperhive.harness.claude_cmdline import CREDENTIAL_ENV as _CREDENTIAL_ENV
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.web.dashboard.metrics import Metrics
from hyperhive.web.dashboard.state import StateSource, Usage, agent_port, observe_agents, read_usage
from hyperhive.web.rpc.admin_ops import observe_ls

MiB = 1024**2
NOW = 1_000_000.0


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    for name in ("alice", "bob", "carol"):
        p.create_agent(AgentName(name), AgentConfig())
    return p


def snap(name: str, state: str = "running", **kw: Any) -> dict[str, Any]:
    return {"name": name, "role": "agent", "state": state, "transient": None, "driver": "builtin",
            "sandboxed": True, "pid": 40 if state == "running" else None, "restarts": 0, "last_exit": None,
            "started_at": None, **kw}


class FakeUsage:
    """The backend's ``usage(name)``: figures per name, counting its calls."""

    def __init__(self, figures: Mapping[str, Any]) -> None:
        self.figures = dict(figures)
        self.calls: list[str] = []

    def __call__(self, name: AgentName) -> Any:
        self.calls.append(name)
        value = self.figures.get(name)
        if isinstance(value, Exception):
            raise value
        return value


ALICE = {"memory_bytes": 112 * MiB, "memory_peak_bytes": 180 * MiB, "pids": 7}


# --- the web UI link --------------------------------------------------------------------
def test_link_port_is_the_daemons_sticky_port_not_the_agents(paths: StatePaths) -> None:
    (paths.agents / "alice" / "port").write_text("8123\n")
    (paths.state(AgentName("alice")) / "web.port").write_text("9999\n")  # the agent's to write: ignored
    (paths.state(AgentName("bob")) / "web.port").write_text("9998\n")  # no sticky port: no link
    assert agent_port(paths, AgentName("alice")) == 8123
    assert agent_port(paths, AgentName("bob")) is None
    obs = observe_agents(paths, [snap("alice"), snap("bob"), snap("carol", "stopped")], NOW, with_tombstones=False)
    assert obs.ports == {"alice": 8123, "bob": None, "carol": None}


@pytest.mark.parametrize("text", ["", "x", "0", "70000", "-1", "８１２３"])
def test_a_bad_port_file_is_no_link(paths: StatePaths, text: str) -> None:
    (paths.agents / "alice" / "port").write_text(text)
    assert agent_port(paths, AgentName("alice")) is None


# --- badges and usage ---------------------------------------------------------------------
def test_observe_badges_and_usage_of_running_agents_only(paths: StatePaths) -> None:
    usage = FakeUsage({"alice": ALICE, "bob": None, "carol": ALICE})
    snaps = [snap("alice", sandboxed=False), snap("bob", driver="claude"), snap("carol", "stopped")]
    obs = observe_agents(paths, snaps, NOW, with_tombstones=False, usage_of=usage)
    assert obs.badges == {"alice": ["unsandboxed"], "bob": ["needs-login"], "carol": []}
    assert obs.usage == {"alice": ALICE, "bob": None}  # bob has no cgroup; carol is stopped
    assert sorted(usage.calls) == ["alice", "bob"]


def test_observe_takes_known_usage_and_reads_only_the_missing(paths: StatePaths) -> None:
    usage = FakeUsage({"alice": ALICE, "bob": ALICE})
    known: dict[str, Usage | None] = {"alice": {"memory_bytes": 1, "memory_peak_bytes": 2, "pids": 3},
                                      "carol": {"memory_bytes": 1, "memory_peak_bytes": 1, "pids": 1}}
    obs = observe_agents(paths, [snap("alice"), snap("bob"), snap("carol", "stopped")], NOW,
                         with_tombstones=False, usage_of=usage, known_usage=known)
    assert obs.usage == {"alice": known["alice"], "bob": ALICE}  # carol stopped: her old figures dropped
    assert usage.calls == ["bob"]


def test_read_usage_keeps_the_three_keys_and_survives_a_failure() -> None:
    usage = FakeUsage({"alice": {**ALICE, "extra": 1, "pids": "7"}, "bob": OSError("cgroup gone")})
    got = read_usage(usage, [snap("alice"), snap("bob"), snap("carol", "stopped")])
    assert got == {"alice": {"memory_bytes": 112 * MiB, "memory_peak_bytes": 180 * MiB, "pids": None},
                   "bob": None}
    assert read_usage(None, [snap("alice")]) == {}


# --- the dashboard's cache: usage refreshes with the badges, not per request ---------------------
class Answer:
    """A pykka proxy method as ``bridge.call`` uses it: ``defer(..., reply=future)``."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value

    def defer(self, *args: Any, reply: cf.Future, **kwargs: Any) -> None:
        reply.set_running_or_notify_cancel()
        reply.set_result(self.value())


class Actor:
    def __init__(self, **methods: Callable[[], Any]) -> None:
        for name, fn in methods.items():
            setattr(self, name, Answer(fn))


async def test_state_source_usage_cache(paths: StatePaths) -> None:
    snaps = {"alice": snap("alice"), "bob": snap("bob", "stopped")}
    usage = FakeUsage({"alice": ALICE, "bob": ALICE})
    source = StateSource(paths, Actor(ls=lambda: list(snaps.values())),
                         Actor(stats=lambda: {"parked": {}, "undelivered": {}}), None, None, usage_of=usage)
    rows = {r["name"]: r for r in (await source.sections(["containers"]))["containers"]}
    assert rows["alice"]["memory"] == "112M/180M" and rows["alice"]["pids"] == "7 pids"
    assert rows["bob"]["memory"] is None
    assert usage.calls == ["alice"]
    usage.figures["alice"] = {"memory_bytes": 120 * MiB, "memory_peak_bytes": 180 * MiB, "pids": 8}
    rows = {r["name"]: r for r in (await source.sections(["containers"]))["containers"]}
    assert rows["alice"]["memory"] == "112M/180M" and usage.calls == ["alice"]  # a request reads nothing
    await source.refresh_badges()
    rows = {r["name"]: r for r in (await source.sections(["containers"]))["containers"]}
    assert rows["alice"]["memory"] == "120M/180M" and rows["alice"]["pids"] == "8 pids"
    assert usage.calls == ["alice", "alice"]
    # bob starts (a state change row): his figures are read then, and cached.
    snaps["bob"] = snap("bob")
    source.note_container("container.state", snaps["bob"])
    (row,) = await source.container_rows([snaps["bob"]])
    assert row["memory"] == "112M/180M" and usage.calls[-1] == "bob"
    # alice stops: no figures, and none cached for her next start.
    snaps["alice"] = snap("alice", "stopped")
    source.note_container("container.state", snaps["alice"])
    (row,) = await source.container_rows([snaps["alice"]])
    assert row["memory"] is None and row["pids"] is None and "alice" not in source.usage


# --- hive ls --------------------------------------------------------------------------------
class Backend:
    def __init__(self, usage: FakeUsage) -> None:
        self.usage = usage


def test_observe_ls_adds_usage_and_badges(paths: StatePaths) -> None:
    backend = Backend(FakeUsage({"alice": ALICE}))
    out = observe_ls([snap("alice", sandboxed=False), snap("bob", "stopped", driver="claude")], paths, backend)
    alice, bob = out
    assert alice["usage"] == ALICE and alice["badges"] == ["unsandboxed"] and alice["sandboxed"] is False
    assert bob["usage"] is None and bob["badges"] == ["needs-login"]
    # No paths: no badges (as before); no backend, or one without cgroups: usage null.
    (a,) = observe_ls([snap("alice")], None, None)
    assert a["usage"] is None and "badges" not in a
    (a,) = observe_ls([snap("alice")], paths, object())
    assert a["usage"] is None and a["badges"] == []


def ls_row(name: str, state: str = "running", **kw: Any) -> dict[str, Any]:
    return {**snap(name, state), "parked": {"tool": 0, "system": 1 if state == "running" else 0},
            "undelivered": 0, "activity": "idle" if state == "running" else None,
            "heartbeat_age": 2.4 if state == "running" else None, "badges": [], "usage": None, **kw}


def test_format_ls() -> None:
    rows = [
        ls_row("m1nd", role="manager", pid=101,
               usage={"memory_bytes": 300 * MiB, "memory_peak_bytes": int(1.5 * 1024**3), "pids": 12}),
        ls_row("alice", pid=102, badges=["needs-login", "unsandboxed"], sandboxed=False, usage=ALICE, restarts=2,
               disk={"bytes": int(1.2 * 1024**3), "files": 9, "complete": True, "at": 1.0}),
        # Stale cgroup figures are not shown; disk use is, stopped or not (a lower bound: ≥).
        ls_row("bob", "stopped", last_exit="exit 1", undelivered=3, usage=ALICE,
               disk={"bytes": 5 * MiB, "files": 9, "complete": False, "at": 1.0}),
        ls_row("carol", transient="starting", pid=None, usage={"memory_bytes": 5 * MiB, "memory_peak_bytes": None,
                                                               "pids": None}),
    ]
    assert format_ls(rows) == "\n".join([
        "NAME   ROLE     STATE     ACTIVITY  BEAT    PID  RESTARTS  PARKED  UNDELIVERED  LAST EXIT  MEM        PIDS"
        "  DISK   BADGES",
        "m1nd   manager  running   idle      2s ago  101  0         1       0            -          300M/1.5G  12  "
        "  -      -",
        "alice  agent    running   idle      2s ago  102  2         1       0            -          112M/180M  7   "
        "  1.2G   needs-login,unsandboxed",
        "bob    agent    stopped   -         -       -    0         0       3            exit 1     -          -   "
        "  ≥5.0M  -",
        "carol  agent    starting  idle      2s ago  -    0         1       0            -          5.0M       -   "
        "  -      -",
    ])


def test_format_ls_keeps_the_old_columns_first() -> None:
    """The columns ``hive ls`` printed before, unchanged, then MEM, PIDS, DISK, BADGES."""
    header = format_ls([]).split()
    assert header[:11] == ["NAME", "ROLE", "STATE", "ACTIVITY", "BEAT", "PID", "RESTARTS", "PARKED", "UNDELIVERED",
                           "LAST", "EXIT"]
    assert header[11:] == ["MEM", "PIDS", "DISK", "BADGES"]


# --- /metrics -------------------------------------------------------------------------------
def samples(text: str) -> dict[str, float]:
    return {s.name + repr(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_metrics_memory_and_pids_gauges(paths: StatePaths) -> None:
    snaps = [snap("alice"), snap("bob"), snap("carol", "stopped")]
    usage = FakeUsage({"alice": ALICE, "bob": {"memory_bytes": 5 * MiB, "memory_peak_bytes": None, "pids": None},
                       "carol": ALICE})
    source = StateSource(paths, None, None, None, None, usage_of=usage)

    async def containers() -> list[dict[str, Any]]:
        return snaps

    metrics = Metrics()
    broker = Actor(stats=lambda: {"parked": {}, "undelivered": {}})
    listing = Actor(list=lambda: {"pending": []})
    m = samples((await metrics.scrape(containers, broker, listing, listing, usage_of=source.read_usage)).decode())
    assert m["hyperhive_agent_memory_bytes[('agent', 'alice'), ('kind', 'current')]"] == 112 * MiB
    assert m["hyperhive_agent_memory_bytes[('agent', 'alice'), ('kind', 'peak')]"] == 180 * MiB
    assert m["hyperhive_agent_pids[('agent', 'alice')]"] == 7
    assert m["hyperhive_agent_memory_bytes[('agent', 'bob'), ('kind', 'current')]"] == 5 * MiB
    assert not any("'bob'" in k and ("peak" in k or "pids" in k) for k in m)  # unknown figures: no sample
    assert not any("'carol'" in k for k in m)  # stopped: none
    assert sorted(usage.calls) == ["alice", "bob"]  # read at scrape time
    # A scrape after alice stops drops her gauges.
    snaps[0] = snap("alice", "stopped")
    m = samples((await metrics.scrape(containers, broker, listing, listing, usage_of=source.read_usage)).decode())
    assert not any("'alice'" in k for k in m)
