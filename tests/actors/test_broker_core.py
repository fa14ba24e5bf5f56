"""hyperhive.actors.broker_core: send policy, recv waits and parked-waiter order."""

from __future__ import annotations

import concurrent.futures as cf
import math

import pytest

from hyperhive.actors.broker_core import BrokerCore, Waiter, clamp_wait
from hyperhive.errors import BadRequest, NotAllowed, UnknownAgent

DEFAULT = 30.0
CAP = 180.0


# --- clamp_wait ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("wait", "default", "cap", "want"),
    [
        (None, DEFAULT, CAP, 30.0),
        (0, DEFAULT, CAP, 0.0),
        (0.0, DEFAULT, CAP, 0.0),
        (5, DEFAULT, CAP, 5.0),
        (2.5, DEFAULT, CAP, 2.5),
        (180, DEFAULT, CAP, 180.0),
        (180.5, DEFAULT, CAP, 180.0),
        (500, DEFAULT, CAP, 180.0),
        (math.inf, DEFAULT, CAP, 180.0),
        (None, 300.0, CAP, 180.0),  # a default above the cap is capped too
        (None, 0.0, CAP, 0.0),
        (10, DEFAULT, 0.0, 0.0),
    ],
    ids=[
        "none-default", "zero", "zero-float", "five", "fraction", "at-cap", "just-over-cap", "over-cap",
        "infinity", "default-over-cap", "default-zero", "cap-zero",
    ],
)
def test_clamp_wait(wait: float | None, default: float, cap: float, want: float) -> None:
    got = clamp_wait(wait, default, cap)
    assert got == want
    assert isinstance(got, float)


@pytest.mark.parametrize("wait", [-1, -0.001, -math.inf])
def test_clamp_wait_negative(wait: float) -> None:
    with pytest.raises(BadRequest) as exc:
        clamp_wait(wait, DEFAULT, CAP)
    assert exc.value.code == "bad_request"
    assert "wait_seconds" in exc.value.message


def test_clamp_wait_nan_is_refused_or_bounded() -> None:
    try:
        got = clamp_wait(math.nan, DEFAULT, CAP)
    except BadRequest:
        return
    assert 0.0 <= got <= CAP


# --- check_send ------------------------------------------------------------------

def core_with(**policies: frozenset[str] | None) -> BrokerCore:
    core = BrokerCore(recv_default=DEFAULT, recv_cap=CAP)
    for agent, allowed in policies.items():
        core.register(agent, allowed)
    return core


@pytest.mark.parametrize(
    ("sender", "to", "error", "needle"),
    [
        # unknown recipients
        ("a", "ghost", UnknownAgent, "ghost"),
        ("operator", "ghost", UnknownAgent, "ghost"),
        ("system", "ghost", UnknownAgent, "ghost"),
        # nobody messages system, whoever they are
        ("a", "system", NotAllowed, "system"),
        ("operator", "system", NotAllowed, "system"),
        ("system", "system", NotAllowed, "system"),
        ("free", "system", NotAllowed, "system"),
        # the allowed_recipients policy
        ("a", "c", NotAllowed, "allowed_recipients"),
        ("mute", "a", NotAllowed, "allowed_recipients"),
        ("mute", "operator", NotAllowed, "allowed_recipients"),  # a restricted agent must list operator
        ("b-only", "operator", NotAllowed, "allowed_recipients"),
        # nobody messages themselves
        ("a", "a", NotAllowed, "itself"),
        ("free", "free", NotAllowed, "itself"),
        ("mute", "mute", NotAllowed, "itself"),
        ("operator", "operator", NotAllowed, "itself"),
        # fine
        ("a", "b", None, None),
        ("free", "a", None, None),
        ("free", "mute", None, None),
        ("b-only", "b", None, None),
        ("a", "operator", None, None),  # operator is reachable without being registered
        ("free", "operator", None, None),
        ("operator", "a", None, None),
        ("operator", "mute", None, None),
        ("system", "a", None, None),
    ],
)
def test_check_send(sender: str, to: str, error: type[Exception] | None, needle: str | None) -> None:
    core = core_with(
        a=frozenset({"b", "operator"}), b=None, c=None, free=None, mute=frozenset(),
        **{"b-only": frozenset({"b"})},
    )
    if error is None:
        core.check_send(sender, to)
        return
    with pytest.raises(error) as exc:
        core.check_send(sender, to)
    assert needle is not None and needle in str(exc.value)


def test_check_send_policy_message_names_rule_and_list() -> None:
    core = core_with(a=frozenset({"c", "b"}), b=None, c=None, d=None)
    with pytest.raises(NotAllowed) as exc:
        core.check_send("a", "d")
    msg = exc.value.message
    assert exc.value.code == "not_allowed"
    assert exc.value.status == 403
    assert "allowed_recipients" in msg
    assert "[b, c]" in msg  # sorted
    assert "a may not message d" in msg


def test_check_send_empty_policy_says_nobody() -> None:
    core = core_with(a=frozenset(), b=None)
    with pytest.raises(NotAllowed, match=r"allowed_recipients = \[nobody\]"):
        core.check_send("a", "b")


@pytest.mark.parametrize("sender", ["operator", "system"])
def test_operator_and_system_bypass_policy(sender: str) -> None:
    # Even a policy registered under their name does not bind them.
    core = core_with(a=None, b=None, **{sender: frozenset()})
    core.check_send(sender, "a")
    core.check_send(sender, "b")


def test_policy_accepts_a_list() -> None:
    # The coordinator registers list(cfg.allowed_recipients).
    core = BrokerCore()
    core.register("a", ["b"])  # type: ignore[arg-type]
    core.register("b", None)
    core.register("c", None)
    core.check_send("a", "b")
    with pytest.raises(NotAllowed):
        core.check_send("a", "c")


def test_forget_makes_agent_unknown() -> None:
    core = core_with(a=None, b=None)
    core.check_send("a", "b")
    core.forget("b")
    with pytest.raises(UnknownAgent):
        core.check_send("a", "b")
    core.forget("b")  # twice is fine
    core.forget("never-there")


def test_reregister_replaces_policy() -> None:
    core = core_with(a=frozenset(), b=None)
    with pytest.raises(NotAllowed):
        core.check_send("a", "b")
    core.register("a", None)
    core.check_send("a", "b")


# --- parked recvs ------------------------------------------------------------------

def park(core: BrokerCore, agent: str, system: bool) -> Waiter:
    return core.park(agent, system, cf.Future(), deadline=100.0)


def drain_order(core: BrokerCore, agent: str) -> list[Waiter]:
    out = []
    while (w := core.take_waiter(agent)) is not None:
        out.append(w)
    return out


@pytest.mark.parametrize(
    ("kinds", "want"),
    [
        ("T", [0]),
        ("S", [0]),
        ("TT", [0, 1]),
        ("SS", [0, 1]),
        ("ST", [1, 0]),
        ("TS", [0, 1]),
        ("STST", [1, 3, 0, 2]),
        ("SSTT", [2, 3, 0, 1]),
        ("SSST", [3, 0, 1, 2]),
        ("TSSTST", [0, 3, 5, 1, 2, 4]),
    ],
)
def test_take_waiter_order(kinds: str, want: list[int]) -> None:
    """Tool-level ("T") recvs before system ("S") ones; FIFO within each."""
    core = BrokerCore()
    parked = [park(core, "a", k == "S") for k in kinds]
    got = drain_order(core, "a")
    assert [parked.index(w) for w in got] == want
    assert core.parked() == {}


@pytest.mark.parametrize(
    ("kinds", "cancelled", "want"),
    [
        ("T", {0}, []),
        ("TT", {0}, [1]),
        ("TT", {1}, [0]),
        ("TS", {0}, [1]),
        ("TTS", {0, 1}, [2]),
        ("STT", {1}, [2, 0]),
        ("SST", {0, 2}, [1]),
        ("TSTS", {0, 1, 2, 3}, []),
    ],
)
def test_take_waiter_skips_cancelled(kinds: str, cancelled: set[int], want: list[int]) -> None:
    core = BrokerCore()
    parked = [park(core, "a", k == "S") for k in kinds]
    for i in cancelled:
        assert parked[i].reply.cancel()
    got = drain_order(core, "a")
    assert [parked.index(w) for w in got] == want
    assert core.parked() == {}
    assert core.drain() == []  # the skipped ones were dropped, not left behind


def test_take_waiter_skips_already_completed() -> None:
    core = BrokerCore()
    done = park(core, "a", False)
    done.reply.set_result("the caller already has an answer")
    live = park(core, "a", False)
    assert core.take_waiter("a") is live


def test_take_waiter_claims_the_future() -> None:
    core = BrokerCore()
    w = park(core, "a", False)
    assert not w.reply.running()
    got = core.take_waiter("a")
    assert got is w
    assert w.reply.running()
    assert not w.reply.done()
    assert not w.reply.cancel()  # too late for the caller to give up now
    w.reply.set_result([])
    assert w.reply.result() == []


def test_take_waiter_other_agent_untouched() -> None:
    core = BrokerCore()
    wa = park(core, "a", False)
    wb = park(core, "b", True)
    assert core.take_waiter("c") is None
    assert core.take_waiter("b") is wb
    assert core.take_waiter("b") is None
    assert core.parked() == {"a": {"tool": 1, "system": 0}}
    assert core.take_waiter("a") is wa


def test_take_waiter_empty() -> None:
    assert BrokerCore().take_waiter("a") is None


def test_park_ids_unique_and_increasing() -> None:
    core = BrokerCore()
    ws = [park(core, agent, system) for agent in ("a", "b") for system in (False, True, False)]
    ids = [w.id for w in ws]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(w.deadline == 100.0 for w in ws)
    assert [(w.agent, w.system) for w in ws[:3]] == [("a", False), ("a", True), ("a", False)]


# --- expire ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kinds", "expire_index", "want_left"),
    [
        ("T", 0, []),
        ("TTT", 1, [0, 2]),
        ("TTT", 0, [1, 2]),
        ("TTT", 2, [0, 1]),
        ("SSS", 1, [0, 2]),
        ("TSTS", 1, [0, 2, 3]),
        ("TSTS", 2, [0, 1, 3]),
    ],
)
def test_expire_removes_only_that_waiter(kinds: str, expire_index: int, want_left: list[int]) -> None:
    core = BrokerCore()
    parked = [park(core, "a", k == "S") for k in kinds]
    target = parked[expire_index]
    assert core.expire(target.id, "a") is target
    assert not target.reply.done()  # expire only unparks; the actor answers it
    left = drain_order(core, "a")
    assert sorted(parked.index(w) for w in left) == want_left


def test_expire_unknown_id_returns_none() -> None:
    core = BrokerCore()
    w = park(core, "a", False)
    assert core.expire(w.id + 1000, "a") is None
    assert core.expire(w.id, "b") is None  # right id, wrong agent
    assert core.expire(w.id, "nobody") is None
    assert core.parked() == {"a": {"tool": 1, "system": 0}}
    assert core.expire(w.id, "a") is w
    assert core.expire(w.id, "a") is None  # already gone
    assert core.parked() == {}


def test_expire_after_take_returns_none() -> None:
    core = BrokerCore()
    w = park(core, "a", True)
    assert core.take_waiter("a") is w
    assert core.expire(w.id, "a") is None


def test_expire_on_empty_core() -> None:
    assert BrokerCore().expire(1, "a") is None


# --- parked / drain ----------------------------------------------------------------

def test_parked_counts() -> None:
    core = BrokerCore()
    assert core.parked() == {}
    park(core, "a", False)
    park(core, "a", False)
    park(core, "a", True)
    park(core, "b", True)
    assert core.parked() == {"a": {"tool": 2, "system": 1}, "b": {"tool": 0, "system": 1}}

    core.take_waiter("a")
    assert core.parked() == {"a": {"tool": 1, "system": 1}, "b": {"tool": 0, "system": 1}}


def test_parked_ignores_finished_waiters() -> None:
    core = BrokerCore()
    w1 = park(core, "a", False)
    park(core, "a", False)
    w3 = park(core, "b", False)
    w1.reply.cancel()
    w3.reply.cancel()
    assert core.parked() == {"a": {"tool": 1, "system": 0}}


def test_drain_returns_everything_and_empties() -> None:
    core = BrokerCore()
    ws = {park(core, "a", False).id, park(core, "a", True).id, park(core, "b", False).id}
    assert {w.id for w in core.drain()} == ws
    assert core.parked() == {}
    assert core.drain() == []
    assert core.take_waiter("a") is None


def test_defaults() -> None:
    core = BrokerCore()
    assert (core.recv_default, core.recv_cap) == (30.0, 180.0)
    assert core.policies == {}


@pytest.mark.parametrize(
    ("kinds", "agent", "want_dropped", "want_left"),
    [
        ("SST", "a", [0, 1], [2]),
        ("TT", "a", [], [0, 1]),
        ("S", "b", [], [0]),
        ("TSTS", "a", [1, 3], [0, 2]),
    ],
)
def test_drop_system_removes_only_system_waiters(
    kinds: str, agent: str, want_dropped: list[int], want_left: list[int]
) -> None:
    core = BrokerCore()
    parked = [park(core, "a", k == "S") for k in kinds]
    dropped = core.drop_system(agent)
    assert [parked.index(w) for w in dropped] == want_dropped
    assert all(not w.reply.done() for w in dropped)  # the actor answers them
    assert [parked.index(w) for w in drain_order(core, "a")] == want_left


def test_a_reparked_waiter_is_served_first_and_still_expires() -> None:
    core = BrokerCore()
    first: cf.Future[object] = cf.Future()
    second: cf.Future[object] = cf.Future()
    w1 = core.park("b", False, first, 10.0)
    core.park("b", False, second, 10.0)
    taken = core.take_waiter("b")
    assert taken is w1 and first.running()  # claimed
    core.repark(taken)  # its message was refused by the store
    assert core.parked() == {"b": {"tool": 2, "system": 0}}
    assert core.take_waiter("b") is w1  # first again, although its future already runs
    core.repark(w1)
    assert core.expire(w1.id, "b") is w1 and w1.take()  # the expiry may still resolve it
    first.set_result([])
    assert not w1.take()  # once answered, never again
    assert core.take_waiter("b") is not None and second.running()
