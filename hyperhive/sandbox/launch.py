"""The launcher every harness starts through: join the agent's cgroups, drop to its uid, exec.

    python -I -S launch.py [--procs FILE]... [--uid UID --gid GID] -- COMMAND [ARG]...

It writes its own pid to each ``--procs`` file (a cgroup.procs) before anything
else, so the agent's whole process tree is inside its limits from its first
instruction; a failure there is fatal (exit 125): an agent never runs outside
its limits. Then, when given ``--uid``/``--gid`` (the daemon is root), it drops
every supplementary group, the gid and the uid, and checks that it cannot get
root back (exit 125 otherwise). Then it execs COMMAND (exit 127 when that
fails). Bad arguments: exit 2.

Running as a script needs only ``os`` and ``sys`` (``-I -S``: no site, no
environment, no hyperhive imports that could be shadowed or fail); the part
below the ``__main__`` guard is for the daemon, which imports this module for
``LAUNCHER`` and ``launch_argv``.
"""

from __future__ import annotations

import os
import sys

EXIT_USAGE = 2
EXIT_SETUP = 125
EXIT_EXEC = 127
USAGE = "usage: launch.py [--procs FILE]... [--uid UID --gid GID] -- COMMAND [ARG]..."


class _Usage(Exception):
    pass


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"hyperhive-launch: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # no stderr: the exit code still says it


def _id(value: str, name: str) -> int:
    if not value.isdigit():
        raise _Usage(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def parse(args: list[str]) -> tuple[list[str], int | None, int | None, list[str]]:
    """(procs files, uid, gid, command) from the command line; _Usage when it is wrong."""
    procs: list[str] = []
    uid: int | None = None
    gid: int | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            command = args[i + 1 :]
            if not command:
                raise _Usage("no command after --")
            if (uid is None) != (gid is None):
                raise _Usage("--uid and --gid go together")
            return procs, uid, gid, command
        if arg not in ("--procs", "--uid", "--gid"):
            raise _Usage(f"unknown argument {arg!r}")
        if i + 1 >= len(args):
            raise _Usage(f"{arg} needs a value")
        value = args[i + 1]
        if arg == "--procs":
            if not value:
                raise _Usage("--procs needs a file")
            procs.append(value)
        elif arg == "--uid":
            uid = _id(value, "--uid")
        else:
            gid = _id(value, "--gid")
        i += 2
    raise _Usage("missing -- before the command")


def join_cgroups(procs: list[str]) -> None:
    """Write our pid to each cgroup.procs; OSError when one fails (never create a file: no O_CREAT)."""
    data = str(os.getpid()).encode()
    for path in procs:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {path}")
        finally:
            os.close(fd)


def drop_privileges(uid: int, gid: int) -> None:
    """No supplementary groups, then gid, then uid (the order matters: after setuid, setgid is refused)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid or os.getegid() != gid:
        raise OSError(f"ids are {os.getresuid()}/{os.getresgid()} after the drop")
    if os.getgroups() not in ([], [gid]):
        raise OSError(f"supplementary groups left: {os.getgroups()}")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise OSError("setuid(0) still works after the drop")


def exec_command(command: list[str]) -> None:
    """execvp without os.execvp: that one imports ``warnings`` lazily, which fails once the new uid
    cannot read the interpreter's stdlib (e.g. under /root). Same search and error choice as execvp."""
    name = command[0]
    if "/" in name:
        os.execv(name, command)
    first_other: OSError | None = None
    last: OSError = FileNotFoundError(2, "No such file or directory in PATH", name)
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execv(os.path.join(directory or ".", name), command)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            first_other = first_other or e
    raise first_other or last


def main(args: list[str]) -> int:
    """Run the launcher; returns an exit code only on failure (success is an exec)."""
    try:
        procs, uid, gid, command = parse(args)
    except _Usage as e:
        _say(str(e))
        _say(USAGE)
        return EXIT_USAGE
    try:
        join_cgroups(procs)
    except OSError as e:
        _say(f"cannot join cgroup: {e}")
        return EXIT_SETUP
    if uid is not None and gid is not None:
        try:
            drop_privileges(uid, gid)
        except OSError as e:
            _say(f"cannot drop to uid {uid} gid {gid}: {e}")
            return EXIT_SETUP
    try:
        exec_command(command)
    except OSError as e:
        _say(f"cannot run {command[0]!r}: {e}")
    return EXIT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ---- for the daemon (importers) only; the script never gets here ----

from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

__all__ = ["LAUNCHER", "launch_argv"]

LAUNCHER: Path = Path(__file__).resolve()


def launch_argv(
    python: str,
    procs_files: Sequence[Path],
    uid: int | None,
    gid: int | None,
    argv: Sequence[str],
) -> list[str]:
    """The command line that starts ``argv`` through the launcher (uid and gid both or neither)."""
    if not argv:
        raise ValueError("argv is empty")
    if (uid is None) != (gid is None):
        raise ValueError("uid and gid go together")
    out = [python, "-I", "-S", str(LAUNCHER)]
    for path in procs_files:
        out += ["--procs", str(path)]
    if uid is not None and gid is not None:
        if uid < 0 or gid < 0:
            raise ValueError(f"bad ids: {uid}, {gid}")
        out += ["--uid", str(uid), "--gid", str(gid)]
    return [*out, "--", *argv]
