"""The daemon's stop table (pure): every part the daemon starts is stopped by
one step, in the reverse order of the start; a daemon stopped before any part
started still releases its lock and says it stopped."""

from __future__ import annotations

import dataclasses
import fcntl
from pathlib import Path

from hyperhive import daemon
from hyperhive.daemon_process import take_lock
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings

# Fields that are not parts to stop: settings, layout, lock (its own step), hub, tables, sd_notify.
NOT_PARTS = {"settings", "paths", "lock", "db", "hub", "heartbeats", "turn_slots", "notifier"}


def test_every_part_has_one_stop_step() -> None:
    parts = {f.name for f in dataclasses.fields(daemon.Daemon)} - NOT_PARTS
    names = [attr for attr, _ in daemon._STOP_ORDER]
    assert len(names) == len(set(names)) and set(names) == parts


def test_servers_stop_before_the_actors_they_feed_and_the_broker_last() -> None:
    names = [attr for attr, _ in daemon._STOP_ORDER]
    assert names[:2] == ["dashboard", "admin"]
    assert names.index("coordinator") < names.index("backend") < names.index("broker") == len(names) - 1


def test_stopping_a_daemon_with_nothing_started_releases_the_lock(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    d = daemon.Daemon(Settings(state_dir=paths.root), paths, take_lock(paths))
    daemon.stop(d)
    assert d.lock.closed
    with open(paths.root / "run" / "daemon.lock", "a+") as again:  # free for the next daemon
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
