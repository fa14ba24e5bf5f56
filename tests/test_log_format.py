"""hyperhive.logs: which format a process writes (console on a terminal, json
for journald, a file or a pipe) and what each looks like."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from hyperhive.logs import choose_format


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("choice", "tty", "env", "want"), [
    ("auto", True, {}, "console"),
    ("auto", False, {}, "json"),
    ("auto", True, {"JOURNAL_STREAM": "8:12345"}, "json"),  # systemd hands the journal as stdout
    ("auto", True, {"INVOCATION_ID": "0123abcd"}, "json"),  # any systemd unit
    ("auto", True, {"JOURNAL_STREAM": ""}, "console"),  # empty: not set
    ("console", False, {"JOURNAL_STREAM": "8:1"}, "console"),  # asked for: as asked
    ("json", True, {}, "json"),
])
def test_choose_format(choice: str, tty: bool, env: dict[str, str], want: str) -> None:
    assert choose_format(choice, Tty() if tty else io.StringIO(), env) == want


def test_a_stream_without_isatty_is_not_a_terminal() -> None:
    assert choose_format("auto", object(), {}) == "json"  # type: ignore[arg-type]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        choose_format("xml", io.StringIO(), {})


SNIPPET = ("import hyperhive.logs as l, logging; print(l.configure(fmt=%r), flush=True); "
           "l.get('hyperhive.daemon').info('daemon.ready', url='http://127.0.0.1:1/login?token=t', agents=2); "
           "logging.getLogger('tornado.access').warning('from %%s', 'stdlib')")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    return {**env, **extra}


def _on_a_terminal(fmt: str, **env: str) -> str:
    """What the snippet writes with its stdout on a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SNIPPET % fmt], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, env=_env(**env))
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.decode().replace("\r\n", "\n"))  # the colours off


def _into_a_pipe(fmt: str) -> str:
    r = subprocess.run([sys.executable, "-c", SNIPPET % fmt], capture_output=True, text=True, timeout=30, env=_env())
    return r.stdout


@pytest.fixture(scope="module")
def outputs() -> Iterator[dict[str, Future[str]]]:
    """The four runs below, each a process of its own, started together (an
    interpreter's start and imports are most of each test's time)."""
    with ThreadPoolExecutor(4) as pool:
        yield {"tty": pool.submit(_on_a_terminal, "auto"),
               "tty under systemd": pool.submit(_on_a_terminal, "auto", JOURNAL_STREAM="8:1"),
               "pipe auto": pool.submit(_into_a_pipe, "auto"), "pipe json": pool.submit(_into_a_pipe, "json")}


def test_auto_on_a_terminal_writes_readable_lines(outputs: dict[str, Future[str]]) -> None:
    out = outputs["tty"].result(timeout=60)
    first, ready, stdlib = out.splitlines()[:3]
    assert first == "console"
    assert "daemon.ready" in ready and "url=" in ready and "agents=" in ready and not ready.startswith("{")
    assert ready.index("url=") < ready.index("agents=")  # the event's own order
    assert "from stdlib" in stdlib and not stdlib.startswith("{")


def test_auto_under_systemd_writes_json_even_on_a_terminal(outputs: dict[str, Future[str]]) -> None:
    out = outputs["tty under systemd"].result(timeout=60)
    first, *rows = out.splitlines()
    assert first == "json"
    events = [json.loads(r) for r in rows]
    assert [e["event"] for e in events] == ["daemon.ready", "from stdlib"]
    assert events[0]["agents"] == 2 and events[0]["level"] == "info" and events[0]["timestamp"].endswith("Z")


@pytest.mark.parametrize("fmt", ["auto", "json"])
def test_into_a_pipe_it_is_json(outputs: dict[str, Future[str]], fmt: str) -> None:
    first, *rows = outputs[f"pipe {fmt}"].result(timeout=60).splitlines()
    assert first == "json" and [json.loads(x)["event"] for x in rows] == ["daemon.ready", "from stdlib"]
