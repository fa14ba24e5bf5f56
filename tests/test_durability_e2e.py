"""What survives: acknowledged sends across a daemon kill -9, harness crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from support import Hive, async_wait_for, pid_alive, wait_for

from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

pytestmark = pytest.mark.e2e  # every test here starts a daemon


async def test_acked_sends_survive_kill9_and_are_delivered_once(hive: Hive) -> None:
    hive.spawn("a")
    hive.spawn("b")
    hive.admin("stop", name="b")  # nobody consumes b's inbox until the test does
    acked: list[int] = []
    sender = AsyncClient(hive.socket("a"))

    async def send_forever(i: int) -> None:
        n = 0
        while True:
            resp = await sender.request("send", to="b", body=f"s{i}-{n}")
            acked.append(resp["message_id"])
            n += 1

    tasks = [asyncio.create_task(send_forever(i)) for i in range(8)]
    await async_wait_for(lambda: len(acked) >= 300, timeout=30, what="300 acked sends")
    hive.kill9()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, HiveError) for r in results), results
    await sender.close()
    ack_snapshot = list(acked)

    hive.start()
    assert hive.ls()["b"]["state"] == "stopped"  # desired state survived
    b = AsyncClient(hive.socket("b"))
    try:
        received: list[int] = []
        while True:
            batch = (await b.request("recv", wait_seconds=0))["messages"]
            if not batch:
                break
            received += [m["id"] for m in batch]
    finally:
        await b.close()
    assert len(received) == len(set(received)), "a message was delivered twice"
    missing = set(ack_snapshot) - set(received)
    assert not missing, f"{len(missing)} acknowledged messages lost"


def test_killed_harness_restarts_and_manager_hears_of_it(hive: Hive) -> None:
    hive.spawn("a")
    old = hive.ls()["a"]["pid"]
    os.kill(old, signal.SIGKILL)
    up = wait_for(
        lambda: (c := hive.ls()["a"])["state"] == "running" and c["pid"] != old and c,
        timeout=5, interval=0.05, what="a restarted within 5 s",
    )
    assert up["restarts"] == 1 and up["last_exit"] == "killed by SIGKILL"
    assert not pid_alive(old), "the killed harness was not reaped"

    async def manager_rows() -> list[dict]:
        m = AsyncClient(hive.socket("m1nd"))
        try:
            return (await m.request("recent", limit=20))["messages"]
        finally:
            await m.close()

    rows = asyncio.run(manager_rows())
    crashes = [json.loads(r["body"]) for r in rows if r["from"] == "system" and "ContainerCrash" in r["body"]]
    assert crashes and crashes[-1]["agent"] == "a" and crashes[-1]["exit"] == "killed by SIGKILL"
    # The restarted agent was told (F6).
    wait_for(lambda: hive.ls()["a"]["parked"]["system"] == 1, what="a's harness back on recv")


def test_refused_recipient_names_the_rule(hive: Hive) -> None:
    hive.spawn("b")
    hive.spawn("c", allowed_recipients=["operator"])

    async def run() -> None:
        c = AsyncClient(hive.socket("c"))
        try:
            try:
                await c.request("send", to="b", body="hi")
            except HiveError as exc:
                assert exc.code == "not_allowed"
                assert "allowed_recipients" in exc.message and "operator" in exc.message
            else:
                raise AssertionError("send to b was not refused")
            ok = await c.request("send", to="operator", body="hi operator")
            assert ok["message_id"] > 0
        finally:
            await c.close()

    asyncio.run(run())
