"""A spawn's clone runs off the Coordinator's thread (issue 14): while one is
held, the Coordinator serves every other verb, the name stays reserved, a
clone that fails leaves nothing behind, and a stop does not wait for it.

The clone is held by something real: the operator's repo's
``objects/info/alternates`` is a link to a FIFO, so git's first read of an
object there (the clone's ``rev-parse HEAD^{commit}``; the spawn's checks read
none) blocks in open() until the test swaps the link for an empty file and
wakes the reader. Real git repos, the real Coordinator and ContainerActors
over `sleep` processes; the last test runs a real daemon."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from sleep_backend import NoSockets, SleepBackend, Sleeper
from support import Hive, wait_for
from tornado.ioloop import IOLoop

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.coordinator_core import Registry
from hyperhive.actors.events import Hub
from hyperhive.backends.base import Backend
from hyperhive.errors import BadRequest, Conflict, Internal, Unavailable, UnknownAgent
from hyperhive.names import MANAGER, AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Container, open_hive_db
from hyperhive.workspace import read_workspace

GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "op", "GIT_AUTHOR_EMAIL": "op@x", "GIT_COMMITTER_NAME": "op",
           "GIT_COMMITTER_EMAIL": "op@x"}
CAROL = AgentName("carol")
FIFO_OPEN = ("wait_for_partner", "fifo_open")  # a reader's open() of a FIFO with no writer sleeps here
PROMPT = 10.0  # seconds: what "at once" means here (a held clone is held until the test lets it go)


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV, timeout=30).stdout.strip()


@pytest.fixture
def op(tmp_path: Path) -> Path:
    """The operator's repo: one commit on main."""
    repo = tmp_path / "op"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("the operator's project\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "one")
    return repo


class Hold:
    """Holds every git that reads ``repo``'s objects until `release`."""

    def __init__(self, repo: Path, tmp: Path) -> None:
        self.repo = str(repo)
        self.fifo = tmp / "hold.fifo"
        os.mkfifo(self.fifo)
        self.link = repo / ".git" / "objects" / "info" / "alternates"
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.fifo)
        self.woken = 0  # readers the release found blocked on the FIFO

    def _wake(self) -> bool:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader on it just now
                raise
            return False
        os.close(fd)  # the reader's open() returns and it reads an empty file
        self.woken += 1
        return True

    def release(self, done: Callable[[], bool] = lambda: True) -> None:
        """The link becomes an empty file (no git blocks again), then any reader
        still blocked is woken, until ``done``."""
        if self.link.is_symlink():
            tmp = self.link.with_name("alternates.tmp")
            tmp.write_text("")
            os.replace(tmp, self.link)
        wait_for(lambda: (self._wake() or True) and done(), timeout=60, what="the held clone to end")

    def wait_held(self) -> None:
        """Until a git on this repo is blocked opening a FIFO, without waking it
        (no write end opened): /proc says where each process sleeps."""
        wait_for(lambda: any(self._blocked(p) for p in Path("/proc").iterdir() if p.name.isdigit()),
                 timeout=30, what="a git blocked on the held repo")

    def _blocked(self, proc: Path) -> bool:
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            wchan = (proc / "wchan").read_text()
        except OSError:
            return False
        return (argv[0].endswith(b"git") and any(self.repo.encode() in a for a in argv)
                and wchan in FIFO_OPEN)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.db = open_hive_db(self.paths.db)
        self.hub = Hub()
        self.clock = LoopClock(IOLoop.current())
        self.backend = SleepBackend()
        self.broker = Broker.start(self.db, self.clock, self.hub).proxy()
        backend: Backend[Sleeper] = self.backend
        self.coordinator = Handle(Coordinator.start(Settings(), self.paths, backend, self.broker, self.clock,
                                                    self.hub, NoSockets()).proxy())

    def quick(self) -> Handle[Coordinator]:
        return self.coordinator.within(PROMPT)

    async def names(self) -> list[str]:
        return [s.name for s in await self.quick().ask(Coordinator.ls)]

    def made(self, name: str) -> list[Path]:
        return [p for p in (self.paths.agents / name, self.paths.applied_root / name) if p.exists()]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    assert await w.coordinator.ask(Coordinator.boot) == [MANAGER]
    yield w
    pykka.ActorRegistry.stop_all()
    w.db.close()


@pytest.fixture
def hold(op: Path, tmp_path: Path) -> Iterator[Callable[[], Hold]]:
    """Installs the hold when called (git on the repo blocks from then on)."""
    made: list[Hold] = []

    def install() -> Hold:
        made.append(Hold(op, tmp_path))
        return made[0]

    yield install
    for h in made:
        h.release()  # whatever the test did: no git is left blocked


async def test_the_coordinator_serves_other_agents_while_a_clone_is_held(world: World, op: Path,
                                                                         hold: Callable[[], Hold]) -> None:
    await world.coordinator.ask(Coordinator.spawn, "alice")
    held = hold()
    spawned = world.coordinator.future(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    held.wait_held()
    # Each answered within PROMPT, while carol's clone cannot move.
    assert await world.names() == [MANAGER, "alice"]
    assert (await world.quick().ask(Coordinator.stop_agent, "alice"))["state"] == "stopped"
    assert (await world.quick().ask(Coordinator.start_agent, "alice"))["state"] == "running"
    await world.quick().ask(Coordinator.spawn, "bob")  # another spawn: no repo, done at once
    assert (await world.quick().ask(Coordinator.kill_agent, "bob", "operator"))["state"] == "stopped"
    assert not spawned.done()
    held.release(spawned.done)
    snap = spawned.result(timeout=0)
    assert (snap["name"], snap["state"], snap["transient"]) == ("carol", "running", None)
    assert held.woken >= 1  # the clone had been blocked on the FIFO all along
    record = read_workspace(world.paths, CAROL)
    assert record is not None and record.repo == str(op.resolve()) and record.base == git(op, "rev-parse", "HEAD")
    assert (world.paths.workspace(CAROL) / "README").read_text() == "the operator's project\n"
    assert await world.names() == [MANAGER, "alice", "bob", "carol"]
    assert {r.name: r.desired for r in Container.select()}["carol"] == "running"


async def test_a_name_being_spawned_is_reserved(world: World, op: Path, hold: Callable[[], Hold]) -> None:
    held = hold()
    spawned = world.coordinator.future(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    held.wait_held()
    with pytest.raises(Conflict, match="agent carol is being spawned"):
        await world.quick().ask(Coordinator.spawn, CAROL)
    with pytest.raises(Conflict, match="agent carol is being spawned"):
        await world.quick().ask(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    # Every other verb: no such agent (yet).
    assert "carol" not in await world.names()
    assert not await world.quick().ask(Coordinator.has_agent, CAROL)
    for verb in (Coordinator.start_agent, Coordinator.stop_agent, Coordinator.restart_agent,
                 Coordinator.rebuild_agent):
        with pytest.raises(UnknownAgent):
            await world.quick().ask(verb, CAROL)
    with pytest.raises(UnknownAgent):
        await world.quick().ask(Coordinator.destroy_agent, CAROL)
    # Its half-made dirs are no tombstone: not listed, not purged from under the clone.
    assert world.made(CAROL) and "carol" not in [t["name"] for t in await world.quick().ask(Coordinator.tombstones)]
    with pytest.raises(Conflict, match="being spawned"):
        await world.quick().ask(Coordinator.purge_tombstone, CAROL, True)
    assert not spawned.done()
    held.release(spawned.done)
    assert spawned.result(timeout=0)["name"] == "carol"
    with pytest.raises(Conflict, match="agent carol already exists"):
        await world.quick().ask(Coordinator.spawn, CAROL)


async def test_a_failing_clone_leaves_nothing_and_the_caller_hears_why(world: World, op: Path,
                                                                     hold: Callable[[], Hold]) -> None:
    blob = git(op, "rev-parse", "HEAD:README")
    (op / ".git" / "objects" / blob[:2] / blob[2:]).unlink()  # the bundle of HEAD cannot be made
    held = hold()
    spawned = world.coordinator.future(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    held.wait_held()
    assert world.made(CAROL)  # begun: its dirs, its config, an empty work/ being cloned into
    held.release(spawned.done)
    with pytest.raises(Internal, match="git bundle failed"):
        spawned.result(timeout=0)
    assert world.made(CAROL) == [] and "carol" not in await world.names()
    assert Container.get_or_none(Container.name == "carol") is None
    # The name is free again.
    assert (await world.quick().ask(Coordinator.spawn, CAROL))["state"] == "running"


async def test_the_checks_refuse_before_anything_is_made(world: World, op: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BadRequest, match="not a git work tree"):
        await world.coordinator.ask(Coordinator.spawn, CAROL, AgentConfig(repo=str(plain)))
    # An earlier carol's unmerged work in the operator's repo is never taken over.
    git(op, "checkout", "-q", "-b", "hive/carol")
    (op / "theirs.txt").write_text("an earlier carol's work\n")
    git(op, "add", "theirs.txt")
    git(op, "commit", "-qm", "unmerged work")
    git(op, "checkout", "-q", "main")
    with pytest.raises(Conflict, match="already has a branch hive/carol"):
        await world.coordinator.ask(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    await world.coordinator.ask(Coordinator.spawn, "alice")
    with pytest.raises(Conflict, match="agent alice already exists"):
        await world.coordinator.ask(Coordinator.spawn, "alice", AgentConfig(repo=str(op)))
    assert world.made(CAROL) == [] and "carol" not in await world.names()


async def test_a_stop_does_not_wait_for_a_held_clone(world: World, op: Path, hold: Callable[[], Hold]) -> None:
    held = hold()
    spawned = world.coordinator.future(Coordinator.spawn, CAROL, AgentConfig(repo=str(op)))
    held.wait_held()
    began = time.monotonic()
    assert world.coordinator.proxy.actor_ref.stop(block=True, timeout=PROMPT)
    assert time.monotonic() - began < PROMPT
    with pytest.raises(Unavailable, match="the daemon stopped before carol was spawned"):
        spawned.result(timeout=0)
    assert world.made(CAROL)
    # The clone goes on with nobody to hand it to: its worker removes the fresh agent when it ends.
    held.release(lambda: world.made(CAROL) == [])
    assert held.woken >= 1


def _cli(hive: Hive, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.e2e
def test_a_daemon_stopped_mid_clone_exits_and_leaves_a_tombstone_purge_removes(op: Path, tmp_path: Path,
                                                                              hold: Callable[[], Hold]) -> None:
    hive = Hive(tmp_path / "state").start()
    spawn: subprocess.Popen[str] | None = None
    try:
        held = hold()
        spawn = _cli(hive, "spawn", "carol", "--repo", str(op))
        held.wait_held()
        # The daemon serves the other verbs while carol's clone is held.
        assert set(hive.ls()) == {MANAGER}
        assert hive.admin("stop", name=MANAGER)["container"]["state"] == "stopped"
        r = _cli(hive, "spawn", "carol")
        _, err = r.communicate(timeout=60)
        assert r.returncode != 0 and "carol is being spawned" in err
        assert hive.proc is not None
        began = time.monotonic()
        hive.proc.send_signal(signal.SIGTERM)
        assert hive.proc.wait(20) == 0  # no wait for the clone, no crash
        assert time.monotonic() - began < 20
        _, err = spawn.communicate(timeout=30)
        assert spawn.returncode != 0 and err
        # The daemon is gone, its worker thread with it: the half-made carol is kept as a tombstone.
        held.release()
        assert held.woken >= 1
        hive.start()
        assert set(hive.ls()) == {MANAGER}
        assert "carol" in [t["name"] for t in hive.admin("tombstones")["tombstones"]]
        out: dict[str, Any] = hive.admin("purge", name="carol")  # its clone had nothing yet: no --force
        assert out["name"] == "carol" and not hive.paths.agent(CAROL).exists()
        assert not (hive.paths.applied_root / "carol").exists()
        assert hive.admin("spawn", name="carol", repo=str(op))["container"]["name"] == "carol"
    finally:
        if spawn is not None and spawn.poll() is None:
            spawn.kill()
            spawn.wait(10)
        hive.stop()


def test_the_hold_holds_git_until_released(op: Path, tmp_path: Path) -> None:
    """The hold itself: a git reading the repo's objects waits for the release, then goes on."""
    h = Hold(op, tmp_path)
    p = subprocess.Popen(["git", "-C", str(op), "rev-parse", "--verify", "-q", "HEAD^{commit}"],
                         stdout=subprocess.PIPE, text=True, env=GIT_ENV)
    try:
        h.wait_held()
        assert p.poll() is None
    finally:
        h.release(lambda: p.poll() is not None)
    assert p.wait(5) == 0 and p.stdout is not None and p.stdout.read().strip() == git(op, "rev-parse", "HEAD")


@pytest.mark.parametrize(("name", "registered", "spawning", "error"), [
    ("carol", [], [], None),
    ("carol", ["carol"], [], "agent carol already exists"),
    ("carol", [], ["carol"], "agent carol is being spawned"),
    ("carol", ["carol"], ["carol"], "agent carol already exists"),  # cannot both be, but registered says it first
    ("dave", ["carol"], ["carol"], None),
])
def test_check_spawn_refuses_a_name_registered_or_being_spawned(name: str, registered: list[str],
                                                                 spawning: list[str], error: str | None) -> None:
    reg: Registry[object] = Registry()
    for n in registered:
        reg.add(AgentName(n), object(), f"urn:{n}")
    if error is None:
        assert reg.check_spawn(name, spawning) == name
    else:
        with pytest.raises(Conflict, match=error):
            reg.check_spawn(name, spawning)
