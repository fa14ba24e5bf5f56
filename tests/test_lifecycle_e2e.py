"""Container lifecycle end to end: every verb through the CLI, transient states
seen by `hive ls --json` while a verb runs, serialized verbs, destroy/purge
and tombstones (issue: container lifecycle and kept state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from support import Hive, wait_for

from hyperhive.observations import MAX_AGE_SECONDS

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def cli(hive: Hive, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
        capture_output=True, text=True, timeout=60, check=check,
    )


def ls_json(hive: Hive) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(cli(hive, "ls", "--json").stdout)}


def freeze(hive: Hive, name: str) -> None:
    """SIGSTOP the whole harness group: a SIGTERM then waits out the 5 s grace."""
    os.killpg(hive.ls()[name]["pid"], signal.SIGSTOP)


def verbs_logged(hive: Hive, name: str) -> list[tuple[str, str]]:
    return [(e["event"], e["transient"]) for e in hive.log_events()
            if e.get("agent") == name and e.get("event") in ("container.verb", "container.verb_done")]


def test_every_verb_moves_through_its_transient_state_to_the_right_end(hive: Hive) -> None:
    hive.spawn("a")
    steps = [("stop", "stopping", "stopped"), ("start", "starting", "running"),
             ("restart", "restarting", "running"), ("rebuild", "rebuilding", "running"),
             ("kill", "killing", "stopped"), ("start", "starting", "running")]
    for verb, _transient, end in steps:
        out = cli(hive, verb, "a").stdout
        assert out.strip() == f"a: {end}", (verb, out)
        c = hive.ls()["a"]
        assert (c["state"], c["transient"]) == (end, None), verb
    logged = verbs_logged(hive, "a")
    assert [t for e, t in logged if e == "container.verb"] == ["spawning"] + [t for _, t, _ in steps]
    assert [t for e, t in logged if e == "container.verb_done"] == ["spawning"] + [t for _, t, _ in steps]


def test_ls_shows_the_transient_state_and_verbs_on_one_agent_run_one_after_the_other(hive: Hive) -> None:
    hive.spawn("a")
    old = hive.ls()["a"]["pid"]
    freeze(hive, "a")
    base = [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir)]
    restart = subprocess.Popen([*base, "restart", "a"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: ls_json(hive)["a"]["transient"] == "restarting", timeout=4, what="restarting in ls --json")
    stop = subprocess.Popen([*base, "stop", "a"], stdout=subprocess.PIPE, text=True)
    assert ls_json(hive)["a"]["transient"] == "restarting"  # the stop waits its turn
    assert restart.wait(30) == 0 and restart.stdout is not None and restart.stdout.read().strip() == "a: running"
    assert stop.wait(30) == 0 and stop.stdout is not None and stop.stdout.read().strip() == "a: stopped"
    c = hive.ls()["a"]
    assert (c["state"], c["transient"]) == ("stopped", None)
    logged = [x for x in verbs_logged(hive, "a") if x[1] != "spawning"]
    assert logged == [("container.verb", "restarting"), ("container.verb_done", "restarting"),
                      ("container.verb", "stopping"), ("container.verb_done", "stopping")]
    assert c["last_exit"] is not None and old != c.get("pid")


def test_destroy_keeps_state_purge_removes_it_and_revive_brings_it_back(hive: Hive) -> None:
    hive.spawn("keep")
    hive.spawn("gone")
    (hive.paths.state("keep") / "notes.md").write_text("remember this")  # type: ignore[arg-type]
    assert cli(hive, "destroy", "keep").stdout.strip() == "keep: destroyed (state kept)"
    assert "keep" not in hive.ls()
    assert (hive.paths.agent("keep") / "state" / "notes.md").read_text() == "remember this"  # type: ignore[arg-type]
    stones = json.loads(cli(hive, "tombstones", "--json").stdout)["tombstones"]
    assert [t["name"] for t in stones] == ["keep"]
    assert stones[0]["size_bytes"] > 0 and stones[0]["credentials_kept"] is False

    assert cli(hive, "destroy", "gone", "--purge").stdout.strip() == "gone: destroyed and purged"
    assert not hive.paths.agent("gone").exists() and not hive.paths.applied("gone").exists()  # type: ignore[arg-type]

    refused = cli(hive, "purge", "m1nd", check=False)
    assert refused.returncode == 2 and "live container" in refused.stderr
    assert cli(hive, "destroy", "m1nd", check=False).returncode == 2

    aid = cli(hive, "revive", "keep").stdout.split("#")[1].split()[0]
    assert "approved" in cli(hive, "approve", aid).stdout
    wait_for(lambda: hive.ls()["keep"]["state"] == "running", what="keep revived")
    assert (hive.paths.state("keep") / "notes.md").read_text() == "remember this"  # type: ignore[arg-type]

    cli(hive, "destroy", "keep")
    assert "purged" in cli(hive, "purge", "keep").stdout
    assert not hive.paths.agent("keep").exists()  # type: ignore[arg-type]
    assert json.loads(cli(hive, "tombstones", "--json").stdout)["tombstones"] == []


BAD = ["..", ".", "a/../..", "m1nd/..", "/etc", "/tmp/x", "a\x00b", "", "A", "../state"]


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_everywhere_and_nothing_outside_is_touched(hive: Hive, name: str) -> None:
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd up")
    sentinel = hive.state_dir.parent / "sentinel"
    sentinel.write_text("keep me")
    before = sorted(p.name for p in hive.state_dir.parent.iterdir())
    for op, fields in (("destroy", {"name": name, "purge": True}), ("purge", {"name": name}),
                       ("revive", {"name": name}), ("restart", {"name": name}), ("rebuild", {"name": name}),
                       ("kill", {"name": name}), ("start", {"name": name}), ("stop", {"name": name}),
                       ("journal", {"name": name, "unit": "", "lines": 10}), ("request_spawn", {"name": name})):
        from hyperhive.errors import HiveError
        with pytest.raises(HiveError) as exc:
            hive.admin(op, **fields)
        assert exc.value.code == "bad_name", (op, exc.value.code, exc.value.message)
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in hive.state_dir.parent.iterdir()) == before
    assert wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd untouched")


def test_a_frozen_harness_turns_unresponsive_and_comes_back_idle(tmp_path: Any) -> None:
    hive = Hive(tmp_path / "state", ["--heartbeat-seconds", "0.5"]).start()
    try:
        hive.spawn("a")
        wait_for(lambda: hive.ls()["a"]["activity"] == "idle", what="a idle")
        assert hive.ls()["a"]["heartbeat_age"] < 1.5
        # F20: the agent's web UI answers on its sticky port (the daemon relays it to the harness).
        sticky = int((hive.paths.agent("a") / "port").read_text())  # type: ignore[arg-type]
        assert hive.port_base <= sticky < hive.port_base + 900
        import urllib.request
        state = wait_for(lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sticky}/api/state",
                                                                   timeout=5).read()), what="a's web UI")
        assert state["ok"] is True
        pgid = hive.ls()["a"]["pid"]
        os.killpg(pgid, signal.SIGSTOP)
        try:
            wait_for(lambda: hive.ls()["a"]["activity"] == "unresponsive", timeout=20, what="a unresponsive")
            assert hive.ls()["a"]["state"] == "running"  # alive but silent: not the same as dead
        finally:
            os.killpg(pgid, signal.SIGCONT)
        wait_for(lambda: hive.ls()["a"]["activity"] == "idle", timeout=10, what="a idle again")
        header = cli(hive, "ls").stdout.splitlines()[0].split()
        assert header[:5] == ["NAME", "ROLE", "STATE", "ACTIVITY", "BEAT"]
    finally:
        hive.stop()


def test_badges_show_a_config_newer_than_the_applied_one(hive: Hive) -> None:
    hive.spawn("a")
    assert hive.ls()["a"]["badges"] == []
    cfg = hive.paths.config_dir("a") / "prompt.md"  # type: ignore[arg-type]
    cfg.write_text("a new prompt, not applied yet\n")
    later = time.time() + 5
    os.utime(cfg, (later, later))
    # From the shared badge cache (issue 17): renewed every 10 s, never older than MAX_AGE_SECONDS.
    wait_for(lambda: hive.ls()["a"]["badges"] == ["needs-update"], timeout=MAX_AGE_SECONDS + 10,
             what="the needs-update badge")
