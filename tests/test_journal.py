"""F23: journal request checks, reading a log's tail from the end, the local
backend's journal, and `hive logs` through a real socket to a real daemon."""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import async_wait_for

from hyperhive import client
from hyperhive.backends.local import LocalBackend
from hyperhive.daemon import Daemon, start, stop
from hyperhive.errors import BadName, BadRequest, UnknownAgent
from hyperhive.journal import JOURNAL_MAX_LINES, check_journal_request, tail_lines
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.web.rpc.journal_ops import journal_ops
from hyperhive.web.rpc.jsonlines import JsonLineServer, bind_socket

LIVE = {"m1nd", "coder"}


@pytest.mark.parametrize(
    ("unit", "lines", "want"),
    [("harness", 10, ("harness", 10)), ("", 1, ("", 1)), ("harness", 5000, ("harness", 5000)),
     ("harness", 5001, ("harness", 5000)), ("", 10**9, ("", 5000))],
)
def test_good_requests(unit: str, lines: int, want: tuple[str, int]) -> None:
    assert check_journal_request("coder", unit, lines, LIVE) == ("coder", *want)


@pytest.mark.parametrize(
    ("name", "unit", "lines", "error"),
    [
        ("ghost", "harness", 10, UnknownAgent),
        ("ghost", "sshd.service", 10, UnknownAgent),  # the name is checked first
        ("..", "harness", 10, BadName),
        ("m1nd/..", "harness", 10, BadName),
        ("/etc/passwd", "harness", 10, BadName),
        ("co\x00der", "harness", 10, BadName),
        (None, "harness", 10, BadName),
        ("coder", "sshd.service", 10, BadRequest),
        ("coder", "hive-ag3nt.service", 10, BadRequest),  # the backend names the unit, not the caller
        ("coder", "machine", 10, BadRequest),
        ("coder", "harness; rm -rf /", 10, BadRequest),
        ("coder", None, 10, BadRequest),
        ("coder", "harness", 0, BadRequest),
        ("coder", "harness", -5, BadRequest),
        ("coder", "harness", True, BadRequest),
        ("coder", "harness", "10", BadRequest),
    ],
)
def test_bad_requests(name: Any, unit: Any, lines: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_journal_request(name, unit, lines, LIVE)


# --- tail_lines -------------------------------------------------------------

def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "n", "want"),
    [
        (b"a\nb\nc\n", 2, "b\nc\n"),
        (b"a\nb\nc", 2, "b\nc\n"),  # no final newline
        (b"a\nb\nc\n", 10, "a\nb\nc\n"),
        (b"", 5, ""),
        (b"\n\n\n", 2, "\n\n"),  # empty lines count
        (b"only\n", 1, "only\n"),
        (b"bad \xff byte\n", 1, "bad \ufffd byte\n"),
    ],
)
def test_tail_lines(tmp_path: Path, data: bytes, n: int, want: str) -> None:
    assert tail_lines(write(tmp_path / "log", data), n) == want


def test_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "nope.log", 10) == ""


def test_tail_across_blocks_and_long_lines(tmp_path: Path) -> None:
    long = b"x" * 200_000  # longer than a read block
    data = b"".join(f"line {i}\n".encode() for i in range(30_000)) + long + b"\nlast\n"
    out = tail_lines(write(tmp_path / "log", data), 3).split("\n")
    assert out == ["line 29999", long.decode(), "last", ""]
    lines = tail_lines(tmp_path / "log", 20_000).splitlines()
    assert len(lines) == 20_000 and lines[0] == "line 10002"


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_tail_reads_from_the_end_not_the_whole_file(tmp_path: Path) -> None:
    # Lines 00000000 to 00299999: a thousand numbered lines, renumbered per thousand (bytes.replace is cheap).
    thousand = b"".join(b"#####%03d some harness output\n" % i for i in range(1000))
    log = write(tmp_path / "big.log", b"".join(thousand.replace(b"#####", b"%05d" % k) for k in range(300)))
    assert log.stat().st_size > 8_000_000
    before = _rchar()
    out = tail_lines(log, 100)
    read = _rchar() - before
    assert out.splitlines()[-1] == "00299999 some harness output"
    assert len(out.splitlines()) == 100
    assert read < 200_000  # a block or two, not 8 MB


# --- the local backend --------------------------------------------------------

def test_local_backend_journal(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    name = AgentName("coder")
    paths.state(name).mkdir(parents=True)
    paths.harness_log(name).write_text("".join(f"{i}\n" for i in range(6000)))
    backend = LocalBackend(paths, "off")
    assert backend.journal(name, "harness", 3) == "5997\n5998\n5999\n"
    assert backend.journal(name, "", 2) == "5998\n5999\n"  # the harness is the whole container here
    capped = backend.journal(name, "harness", 99_999).splitlines()
    assert len(capped) == JOURNAL_MAX_LINES and capped[0] == "1000"
    with pytest.raises(BadRequest):
        backend.journal(name, "sshd.service", 10)
    with pytest.raises(BadName):
        backend.journal(AgentName(".."), "harness", 10)


# --- the op and the CLI verb, on a real daemon ----------------------------------

@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await start(Settings(state_dir=tmp_path / "state", listen="127.0.0.1:0", sandbox="off"))
    try:
        yield d
    finally:
        stop(d)


async def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`hive …` as its own process, as the operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hyperhive", *argv, stdout=PIPE, stderr=PIPE, stdin=DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.e2e  # an in-process daemon (its m1nd harness a subprocess) and the CLI
async def test_hive_logs_through_the_journal_op(daemon: Daemon, tmp_path: Path) -> None:
    log = daemon.paths.harness_log(AgentName("m1nd"))
    await async_wait_for(lambda: log.exists() and log.stat().st_size > 0, what="m1nd's harness log")
    with log.open("a") as f:  # our own marker lines after whatever the harness wrote
        f.write("".join(f"marker {i}\n" for i in range(3)))
    # The op served on its own socket (the lead merges it into admin_ops).
    ops_dir = StatePaths(tmp_path / "ops")
    server = JsonLineServer(journal_ops(daemon.coordinator, LocalBackend(daemon.paths, "off")), {"socket": "admin"})
    server.add_socket(bind_socket(ops_dir.admin_socket))
    try:
        base = ["--state-dir", str(ops_dir.root), "logs"]
        rc, out, _ = await run_cli([*base, "m1nd", "--lines", "2"])
        assert rc == 0 and len(out.splitlines()) == 2
        rc, out, _ = await run_cli([*base, "m1nd", "--lines", "200", "--unit", "machine"])
        assert rc == 0 and "marker 0\nmarker 1\nmarker 2\n" in out
        rc, _, err = await run_cli([*base, "ghost"])
        assert rc == 2 and "unknown_agent" in err
        rc, _, err = await run_cli([*base, "..", "--lines", "5"])
        assert rc == 2 and "bad_name" in err
        rc, _, err = await run_cli([*base, "m1nd", "--lines", "0"])
        assert rc == 2 and "bad_request" in err
        with pytest.raises(BadRequest, match="unit"):
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: client.request(ops_dir.admin_socket, "journal", name="m1nd", unit="sshd.service"))
    finally:
        server.stop()
