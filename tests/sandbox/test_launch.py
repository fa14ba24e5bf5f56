"""The launcher script: argv shape, exit codes, cgroup join and the uid drop (run for real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperhive.sandbox.launch import LAUNCHER, launch_argv

NOBODY = 65534
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def run(args: list[str], python: str = sys.executable, **kw: object) -> subprocess.CompletedProcess[str]:
    """The launcher as the daemon runs it: ``python -I -S launch.py …``."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [python, "-I", "-S", str(LAUNCHER), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env=ENV,
        **kw,
    )


def test_launch_argv_shape(tmp_path: Path) -> None:
    a, b = tmp_path / "m" / "cgroup.procs", tmp_path / "p" / "cgroup.procs"
    assert launch_argv("/usr/bin/python3", [a, b], 1000, 1001, ["bwrap", "--", "hive", "harness"]) == [
        "/usr/bin/python3", "-I", "-S", str(LAUNCHER),
        "--procs", str(a), "--procs", str(b),
        "--uid", "1000", "--gid", "1001",
        "--", "bwrap", "--", "hive", "harness",
    ]  # fmt: skip
    assert launch_argv("py", [], None, None, ["true"]) == ["py", "-I", "-S", str(LAUNCHER), "--", "true"]
    assert LAUNCHER.is_file() and LAUNCHER.name == "launch.py"


@pytest.mark.parametrize("uid, gid, argv", [(1, None, ["true"]), (None, 1, ["true"]), (1, 1, []), (-1, 1, ["x"])])
def test_launch_argv_refuses(uid: int | None, gid: int | None, argv: list[str]) -> None:
    with pytest.raises(ValueError):
        launch_argv("py", [], uid, gid, argv)


def test_the_script_needs_only_os_and_sys() -> None:
    """-X importtime lists every module imported: nothing beyond what the interpreter loads itself."""
    traced = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(LAUNCHER), "--", "true"],
        capture_output=True, text=True, timeout=30, env=ENV,
    )  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    assert "os" in imported
    for unwanted in ("pathlib", "collections.abc", "hyperhive", "typing", "warnings"):
        assert unwanted not in imported, sorted(imported)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["true"],
        ["--"],
        ["--bogus", "x", "--", "true"],
        ["--procs"],
        ["--uid", "x", "--gid", "1", "--", "true"],
        ["--uid", "1", "--", "true"],
        ["--gid", "1", "--", "true"],
        ["--uid", "-1", "--gid", "1", "--", "true"],
    ],
)
def test_bad_arguments_exit_2_with_usage(args: list[str]) -> None:
    proc = run(args)
    assert proc.returncode == 2
    assert "usage: launch.py" in proc.stderr


def test_procs_file_gets_the_pid_of_the_process_that_runs(tmp_path: Path) -> None:
    """The pid written is the one that execs the command: the command itself, not a parent."""
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    proc = run(["--procs", str(procs), "--", "sh", "-c", "echo $$"])
    assert proc.returncode == 0, proc.stderr
    assert procs.read_text() == proc.stdout.strip()


def test_unwritable_procs_file_is_fatal_125(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("")
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    missing = tmp_path / "gone" / "cgroup.procs"
    for bad in (a_dir, missing, tmp_path / "never-created"):
        marker = tmp_path / "ran"
        proc = run(["--procs", str(good), "--procs", str(bad), "--", "touch", str(marker)])
        assert proc.returncode == 125, proc.stderr
        assert "cannot join cgroup" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert not marker.exists()
    assert not (tmp_path / "never-created").exists()  # no O_CREAT: a missing cgroup is never faked


def test_missing_binary_exits_127() -> None:
    for command in ("no-such-binary-here", "/nonexistent/bin/x"):
        proc = run(["--", command])
        assert proc.returncode == 127
        assert "cannot run" in proc.stderr


DROP_CHECK = """
import os
print(os.getresuid(), os.getresgid(), os.getgroups())
try:
    os.setuid(0)
    print("setuid(0) worked")
except PermissionError:
    print("setuid(0) refused")
"""


def test_drops_to_uid_gid_without_groups() -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 that nobody can run")
    proc = run(["--uid", str(NOBODY), "--gid", str(NOBODY), "--", "/usr/bin/python3", "-I", "-c", DROP_CHECK])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"({NOBODY}, {NOBODY}, {NOBODY}) ({NOBODY}, {NOBODY}, {NOBODY}) []",
        "setuid(0) refused",
    ]


def test_drop_failure_is_fatal_125() -> None:
    """Not root: setgroups is refused, and the command must not run as the caller instead."""
    if os.geteuid() != 0:
        proc = run(["--uid", "1", "--gid", "1", "--", "true"])
    else:
        if not Path("/usr/bin/python3").exists():
            pytest.skip("no /usr/bin/python3 that nobody can run")
        args = ["--uid", str(NOBODY), "--gid", str(NOBODY), "--", "true"]
        proc = run(args, python="/usr/bin/python3", user=NOBODY, group=NOBODY, extra_groups=[])
    assert proc.returncode == 125
    assert "cannot drop" in proc.stderr
