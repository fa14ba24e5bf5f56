"""The kill -9 part of the fault suite (issue 16, Build 6): 100 senders on 4
agent sockets while the daemon is killed with kill -9 at 5 random moments
(seeded), restarted each time on the same state dir; then every acknowledged
message must be present exactly once, and no message twice. Across the same
kills: a TTL question expires on time, a pending approval stays pending and can
be approved, a lifecycle verb cut by the kill leaves a container the next
daemon can act on, and m1nd's harness is adopted each time (same pid).

Every send carries an idempotency key, and a sender that loses its connection
sends again with the same key once the next daemon is up, so "exactly once"
covers retries across a kill too."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from adoption_support import kept_hive, pids
from faults_common import report
from support import Hive, wait_for

from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

SENDERS = ("s1", "s2", "s3", "s4")
PER_SOCKET = 25  # 100 senders
KILLS = 5
SEED = 16


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    yield from kept_hive(tmp_path)


async def _send_until_cut(sock: Path, tag: str, acked: dict[str, int], attempted: set[str],
                          pending: dict[str, str], cut: asyncio.Event) -> None:
    """One sender: send, await the ack, repeat, until the connection is cut. An unacked
    send is left in ``pending`` (key → body) to be sent again with its key."""
    c = AsyncClient(sock)
    n = 0
    try:
        while not cut.is_set():
            body, key = f"{tag}-{n}", f"k-{tag}-{n}"
            attempted.add(body)
            pending[key] = body
            try:
                resp = await c.request("send", to="sink", body=body, idempotency_key=key)
            except HiveError:
                return
            acked[body] = int(resp["message_id"])
            del pending[key]
            n += 1
    finally:
        await c.close()


async def _round(hive: Hive, r: int, delay: float, acked: dict[str, int], attempted: set[str],
                 pending: dict[str, str]) -> None:
    cut = asyncio.Event()
    tasks = [asyncio.ensure_future(_send_until_cut(hive.socket(s), f"r{r}-{s}-{i}", acked, attempted, pending,
                                                   cut)) for s in SENDERS for i in range(PER_SOCKET)]
    await asyncio.sleep(delay)
    hive.kill9()  # the daemon's pid alone, mid-burst
    cut.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _retry(hive: Hive, pending: dict[str, str], acked: dict[str, int], retried: dict[str, int]) -> None:
    """The sends the kill left unanswered, again with their keys (from the first sender's socket:
    a key is per sender, so each goes from the socket that sent it first)."""
    for key, body in list(pending.items()):
        sender = body.split("-")[1]
        c = AsyncClient(hive.socket(sender))
        try:
            resp = await c.request("send", to="sink", body=body, idempotency_key=key)
        finally:
            await c.close()
        retried[body] = int(resp["message_id"])
        acked[body] = retried[body]
        del pending[key]


def _stored(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return [(int(i), str(b)) for i, b in conn.execute("SELECT id, body FROM messages WHERE recipient = 'sink'")]


def test_acknowledged_sends_survive_five_kills_exactly_once(hive: Hive) -> None:
    rng = random.Random(SEED)
    hive.start()
    for name in (*SENDERS, "sink", "mover"):
        hive.spawn(name)
    for name in (*SENDERS, "sink"):
        hive.admin("stop", name=name)  # their sockets stay open; nobody reads the sink's inbox
    manager_pid = pids(hive)["m1nd"]
    acked: dict[str, int] = {}
    attempted: set[str] = set()
    pending: dict[str, str] = {}
    retried: dict[str, int] = {}
    question = approval = None
    lifecycle: list[str] = []
    for r in range(KILLS):
        if r == 1:  # a TTL question across the kill: it must still expire on time
            question = _manager(hive, "ask_operator", question="across a kill?", ttl_seconds=6)["question_id"]
            asked_at = time.time()
        if r == 2:  # an approval across the kill
            approval = _manager(hive, "request_spawn", name="later")["approval_id"]
        if r == 3:  # a lifecycle verb cut by the kill: the next daemon can still act on the container
            _start_verb_then_kill_soon(hive, lifecycle)
        asyncio.run(_round(hive, r, rng.uniform(0.3, 1.5), acked, attempted, pending))
        hive.start()
        assert pids(hive)["m1nd"] == manager_pid, "m1nd's harness was not adopted"
        asyncio.run(_retry(hive, pending, acked, retried))

    stored = _stored(hive.paths.db)
    ids = [i for i, _ in stored]
    bodies = [b for _, b in stored]
    by_body = {b: i for i, b in stored}
    lost = [b for b, i in acked.items() if by_body.get(b) != i]
    duplicated = len(bodies) - len(set(bodies))
    strangers = set(bodies) - attempted
    assert not lost, f"{len(lost)} acknowledged sends are missing or moved, e.g. {lost[:5]}"
    assert duplicated == 0 and len(ids) == len(set(ids)) and not strangers
    # The TTL question expired on time (its deadline passed across a kill); the approval is still pending.
    assert question is not None and approval is not None
    q = wait_for(lambda: next((x for x in hive.admin("questions")["resolved"] if x["id"] == question), None),
                 timeout=30, what="the question's expiry")
    assert q["how"] == "expired" and q["answered_at"] - asked_at < 6 + 10
    assert [a["id"] for a in hive.admin("approvals")["pending"]] == [approval]
    hive.admin("approve", approval_id=approval)
    wait_for(lambda: hive.ls().get("later", {}).get("state") == "running" or None, timeout=60, what="approved")
    # The container whose verb the kill cut can be stopped and started again.
    hive.admin("stop", name="mover")
    hive.admin("start", name="mover")
    assert hive.ls()["mover"]["state"] == "running"
    report(f"kill -9 of the daemon x{KILLS} under 100 senders on 4 sockets: {len(acked)} acknowledged "
           f"({len(retried)} of them retried with their key after a kill), {len(stored)} stored, 0 lost, "
           f"0 duplicated; a TTL question expired on time, an approval survived, m1nd adopted each time")


def _manager(hive: Hive, op: str, **fields: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        c = AsyncClient(hive.socket("m1nd"))
        try:
            return await c.request(op, **fields)
        finally:
            await c.close()

    return asyncio.run(go())


def _start_verb_then_kill_soon(hive: Hive, log: list[str]) -> None:
    """A restart of ``mover`` in flight when the round's kill comes (sent without waiting)."""
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(hive.paths.admin_socket))
    s.sendall(json.dumps({"id": 1, "op": "restart", "name": "mover"}).encode() + b"\n")
    log.append("restart sent")
    s.close()
