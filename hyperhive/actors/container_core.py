"""A container's state and its supervisor's decisions, with no actor, backend
or clock in sight: the ContainerActor does the I/O these return.

What a verb does (its transient kind, then its steps), what an exit report
means (an exit we asked for or of an old generation is ignored; any other is
a crash: the restart delay, the ``ContainerCrash`` event and the manager's
message), when a restart after a crash still applies, and when an idle agent
hibernates (issue 17: no turn for ``hibernate_after`` seconds; its harness is
stopped and the first message for it starts one again). Times are
arguments: ``now`` is the monotonic clock, ``wall`` the wall clock.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Literal

from hyperhive.actors.events import ContainerCrash, ContainerKilled
from hyperhive.actors.snapshots import ContainerSnapshot, State, Transient
from hyperhive.names import MANAGER, AgentName

__all__ = [
    "STABLE_AFTER",
    "Backoff",
    "ContainerCore",
    "Adopt",
    "Crash",
    "Destroy",
    "Hibernate",
    "Kick",
    "Killed",
    "Start",
    "Step",
    "Stop",
    "Verb",
    "describe_exit",
    "kick_text",
    "killed_message",
]

STABLE_AFTER = 60.0  # a harness up this long has its backoff reset
Verb = Literal["start", "stop", "restart", "rebuild", "kill", "destroy", "hibernate", "wake"]
TRANSIENTS: dict[Verb, Transient] = {
    "start": "starting", "stop": "stopping", "restart": "restarting", "rebuild": "rebuilding",
    "kill": "killing", "destroy": "destroying", "hibernate": "hibernating", "wake": "waking",
}
REBUILT = "rebuilt with its newly applied config"
CRASH_KICK = "restarted after a crash"


@dataclass
class Backoff:
    """Crash-restart delays: base, doubling to cap; reset after a stable run."""

    base: float = 1.0
    cap: float = 30.0
    current: float = field(default=0.0)

    def next(self, ran_for: float) -> float:
        if ran_for >= STABLE_AFTER or self.current == 0.0:
            self.current = self.base
        else:
            self.current = min(self.current * 2, self.cap)
        return self.current


UNKNOWN_EXIT = "exit status unknown (adopted)"


def describe_exit(returncode: int | None) -> str:
    """How a harness ended; None: its status is unknown (adopted from an earlier daemon, not our child)."""
    if returncode is None:
        return UNKNOWN_EXIT
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def kick_text(agent: str, reason: str, state_dir: str, again: int = 0, gave_up: int = 0) -> str:
    """F6: what an agent reads after a (re)start. It says what it knows (issue 16):
    the conversation is kept up to the last thing the old harness saved, and a turn
    it had not finished is not remembered as done: its messages come again
    (``again`` of them; ``gave_up``: delivered again once before, not any more)."""
    if again or gave_up:
        turn = (f"Your last turn was interrupted: {_count(again)} it had taken "
                f"{'is' if again == 1 else 'are'} delivered to you again (once: not after a second such end)")
        if gave_up:
            turn += (f"; {_count(gave_up)} already delivered again once ended a turn again and "
                     f"{'is' if gave_up == 1 else 'are'} not delivered any more")
        turn += ". Work it started (files, commands) may be half done."
    else:
        turn = ("If a turn was under way, it did not finish: the messages it had taken are delivered to you "
                "again (once: not after a second such end), and work it started (files, commands) may be "
                "half done.")
    return (
        f"[system] {agent}, your harness was {reason}. Your notes are in your state dir "
        f"({state_dir}) and your conversation is kept up to its last saved step. {turn} Check, then carry on."
    )


def _count(n: int) -> str:
    return f"{n} message" + ("" if n == 1 else "s")


# --- a verb's steps, run in order by the actor ------------------------------
@dataclass(frozen=True)
class Stop:
    grace: float = 5.0  # 0: kill at once


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Kick:
    reason: str


@dataclass(frozen=True)
class Adopt:
    """At boot: take over a harness an earlier daemon left running; if there is
    none, start one and kick it with ``kick``. An adopted harness is not kicked:
    nothing happened to it."""

    kick: str | None = None


@dataclass(frozen=True)
class Killed:
    """Tell the manager (and the hub) that ``by`` killed it."""

    by: str


@dataclass(frozen=True)
class Destroy:
    pass


@dataclass(frozen=True)
class Hibernate:
    """Stop the harness of an idle agent; it shows ``hibernating`` (issue 17)."""


Step = Stop | Start | Kick | Killed | Destroy | Adopt | Hibernate


@dataclass(frozen=True)
class Crash:
    """An exit nobody asked for: restart after ``delay``; tell the manager."""

    event: ContainerCrash
    delay: float
    ran_for: float

    @property
    def message(self) -> str:
        """The manager's inbox message, from ``system``."""
        return json.dumps(self.event.payload())


def killed_message(event: ContainerKilled) -> str:
    """The manager's inbox message after a kill, from ``system``."""
    return json.dumps(event.payload())


@dataclass
class ContainerCore:
    name: AgentName
    driver: str
    backoff: Backoff
    sandboxed: bool = False
    state: State = "stopped"
    transient: Transient | None = None
    restarts: int = 0
    last_exit: str | None = None
    # Bumps on every start and stop: an exit report of an older one is stale.
    generation: int = 0
    started_at: float = 0.0  # monotonic
    # Hibernation (issue 17): seconds with no turn before the harness is stopped (0: never).
    hibernate_after: float = 0.0
    in_turn: bool = False
    activity: int = 0  # bumps at each start and each turn's start and end: an older idle check is stale
    idle_since: float = 0.0  # monotonic

    # --- verbs ----------------------------------------------------------------
    def plan(self, verb: Verb, kick: str | None = None, by: str = "operator",
             adopt: bool = False) -> tuple[Step, ...]:
        """What ``verb`` does, decided as it begins (verbs on one agent never interleave).
        ``adopt`` (a boot's start): a harness left running is taken over instead."""
        if verb == "start":
            if adopt and self.state != "running":
                return (Adopt(kick),)
            return ((Start(),) if self.state != "running" else ()) + ((Kick(kick),) if kick else ())
        if verb == "stop":
            return (Stop(),)
        if verb == "restart":
            return Stop(), Start(), Kick(kick or "restarted")
        if verb == "rebuild":
            return Stop(), Start(), Kick(REBUILT)
        if verb == "kill":
            return Stop(0.0), Killed(by)
        if verb == "hibernate":
            return (Hibernate(),) if self.state == "running" else ()
        if verb == "wake":
            return (Start(),) if self.state == "hibernating" else ()
        return Stop(5.0), Destroy()

    def begin(self, transient: Transient) -> None:
        self.transient = transient

    def end(self) -> None:
        self.transient = None

    def starting(self) -> int:
        """A start is about to run: its generation (for its exit reports)."""
        self.generation += 1
        return self.generation

    def started(self, now: float) -> None:
        """The harness runs. Until its first system recv (``turn(False)``) it is
        starting, which is not idle: a slow start never hibernates it."""
        self.started_at = now
        self.state = "running"
        self.in_turn = True
        self._active(now)

    def hibernated(self) -> None:
        """Its harness stopped for idleness (after ``stopping``)."""
        self.state = "hibernating"

    # --- hibernation ----------------------------------------------------------------
    def _active(self, now: float) -> int:
        self.activity += 1
        self.idle_since = now
        return self.activity

    def turn(self, busy: bool, now: float) -> int | None:
        """A turn started (``busy``), or the harness waits for work (its system recv:
        after a turn, or its start): the activity count to arm an idle check with,
        or None (none to arm: in a turn, or hibernation is off)."""
        self.in_turn = busy
        n = self._active(now)
        return None if busy or not self.hibernate_after else n

    def idle_check(self) -> int | None:
        """The activity count to arm an idle check with, or None (hibernation off)."""
        return self.activity if self.hibernate_after and self.state == "running" else None

    def idle_due(self, activity: int, now: float) -> bool:
        """An idle check armed at ``activity`` fired: hibernate now? Only when nothing
        happened since, no turn runs, no verb runs, and the time has passed."""
        return (activity == self.activity and self.state == "running" and not self.in_turn
                and self.transient is None and self.hibernate_after > 0
                and now - self.idle_since >= self.hibernate_after - 0.001)

    def stopping(self) -> None:
        """A stop on purpose: stopped from now on, whatever the backend says."""
        self.state = "stopped"
        self.generation += 1

    def stopped(self, returncode: int | None) -> None:
        """The harness it stopped exited with ``returncode``."""
        self.last_exit = describe_exit(returncode)

    # --- supervision ------------------------------------------------------------
    def exited(self, generation: int, returncode: int | None, reason: str | None, now: float,
               node: dict[str, str] | None = None) -> Crash | None:
        """The backend's exit report: None when it is one we asked for (or an old
        generation's), else the crash, with the state already "crashed" (``node``: where
        it ran, when the ray backend lost that node)."""
        if generation != self.generation or self.state != "running":
            return None
        ran_for = now - self.started_at
        how = describe_exit(returncode)
        self.state = "crashed"
        self.last_exit = how if reason is None else f"{reason} ({how})"
        delay = self.backoff.next(ran_for)
        return Crash(ContainerCrash(self.name, how, reason or "crash", delay, node), delay, ran_for)

    def restart_due(self, generation: int) -> bool:
        """A crash's restart timer fired: True (and counted) if it still applies."""
        if generation != self.generation or self.state != "crashed":
            return False
        self.restarts += 1
        return True

    def restart_failed(self) -> float:
        """The restart after a crash failed: crashed still; the delay before the next try."""
        self.state = "crashed"
        return self.backoff.next(0.0)

    # --- the snapshot -------------------------------------------------------------
    def snapshot(self, pid: int | None, now: float, wall: float,
                 node: dict[str, str] | None = None) -> ContainerSnapshot:
        running = self.state == "running"
        return ContainerSnapshot(
            name=self.name, role="manager" if self.name == MANAGER else "agent", state=self.state,
            transient=self.transient, pid=pid, driver=self.driver, restarts=self.restarts,
            last_exit=self.last_exit, sandboxed=self.sandboxed,
            started_at=(wall - (now - self.started_at)) if running else None,
            node=node if running else None,
        )
