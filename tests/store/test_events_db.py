from __future__ import annotations

import threading
from pathlib import Path

from hyperhive.store.events_db import EventLog


def test_append_tail_roundtrip(tmp_path: Path) -> None:
    log = EventLog.in_state_dir(tmp_path)
    rows = log.append([("text", {"text": "hi"}), ("turn_end", {})], ts=10.0)
    assert [r.id for r in rows] == [1, 2]
    assert [(r.kind, r.data) for r in log.tail(10)] == [("text", {"text": "hi"}), ("turn_end", {})]
    assert [r.kind for r in log.tail(1)] == ["turn_end"]
    log.close()
    again = EventLog.in_state_dir(tmp_path)
    assert again.count() == 2
    again.close()


def test_prune_by_age_then_count(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "ev.sqlite")
    log.append([("old", {"i": i}) for i in range(3000)], ts=0.0)
    log.append([("new", {"i": i}) for i in range(5000)], ts=1000.0)
    removed = log.prune(now=1000.0, max_age=500.0, keep=2000)
    assert removed == 3000 + 3000
    tail = log.tail(5000)
    assert len(tail) == 2000
    assert {r.kind for r in tail} == {"new"}
    assert tail[-1].data == {"i": 4999} and tail[0].data == {"i": 3000}
    assert log.prune(now=1000.0, max_age=500.0, keep=2000) == 0
    log.close()


def test_two_logs_on_two_threads_do_not_cross(tmp_path: Path) -> None:
    logs = {n: EventLog(tmp_path / f"{n}.sqlite") for n in ("a", "b")}

    def write(name: str) -> None:
        for i in range(50):
            logs[name].append([(name, {"i": i})])

    threads = [threading.Thread(target=write, args=(n,)) for n in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, log in logs.items():
        assert {r.kind for r in log.tail(1000)} == {name}
        assert log.count() == 50
        log.close()
