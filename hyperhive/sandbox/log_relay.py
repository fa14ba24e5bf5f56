"""The log relay: a harness's output, appended to its ``harness.log``.

    python -I -S log_relay.py --out FILE [--max BYTES]

It reads its stdin (the read end of the harness's output pipe) until end of
file, that is until every process holding the pipe's write end is gone, and
appends what comes to FILE, rotating it to ``FILE.1`` past BYTES. The daemon
starts one per harness, as its own uid, outside the sandbox and in a session of
its own: unlike a thread of the daemon, it outlives a daemon restart or crash,
so a harness the next daemon adopts never writes into a closed pipe.

The log is written through a pipe, never handed to the harness as a file: a
process of the agent's could take the harness's stdout (``pidfd_getfd``) and
truncate or rewrite it. FILE is opened ``O_NOFOLLOW`` (a link is never
written), and when it cannot be written the output is still drained: a full
pipe would stall the harness. Bad arguments: exit 2.

Running as a script needs only ``os`` and ``sys`` (``-I -S``, as launch.py);
the part below the ``__main__`` guard is for the daemon, which imports this
module for ``relay_argv``.
"""

from __future__ import annotations

import os
import stat
import sys

EXIT_USAGE = 2
LOG_MAX = 16 << 20  # harness.log is rotated to harness.log.1 past this
USAGE = "usage: log_relay.py --out FILE [--max BYTES]"
_CHUNK = 1 << 16


def _open(path: str) -> int:
    """An fd appending to ``path``, created if missing (0640); OSError for a link or a non-regular file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"hyperhive-log-relay: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # no stderr (the daemon gives none): nothing else to tell


def relay(src: int, path: str, limit: int = LOG_MAX) -> None:
    """Append what ``src`` yields to ``path`` until end of file, rotating past ``limit`` bytes."""
    fd: int | None = None
    size = 0
    try:
        fd = _open(path)
        size = os.fstat(fd).st_size
    except OSError as exc:
        _say(f"cannot write {path}: {exc}")
    while True:
        try:
            chunk = os.read(src, _CHUNK)
        except InterruptedError:
            continue
        except OSError as exc:
            _say(f"cannot read the harness's output: {exc}")
            break
        if not chunk:
            break
        if fd is None:
            continue  # drained all the same
        try:
            if size + len(chunk) > limit and size > 0:
                os.close(fd)
                fd = None
                os.replace(path, path + ".1")
                fd = _open(path)
                size = 0
            os.write(fd, chunk)
            size += len(chunk)
        except OSError as exc:
            _say(f"cannot write {path}: {exc}")
            if fd is not None:
                os.close(fd)
            fd = None
    if fd is not None:
        os.close(fd)


def parse(args: list[str]) -> tuple[str, int]:
    """(file, limit) from the command line; ValueError when it is wrong."""
    out: str | None = None
    limit = LOG_MAX
    if len(args) % 2:
        raise ValueError("every flag takes one value")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag == "--out" and value:
            out = value
        elif flag == "--max" and value.isdigit() and int(value) > 0:
            limit = int(value)
        else:
            raise ValueError(f"bad argument {flag} {value!r}")
    if out is None:
        raise ValueError("--out is required")
    return out, limit


def main(args: list[str]) -> int:
    try:
        out, limit = parse(args)
    except ValueError as exc:
        _say(str(exc))
        _say(USAGE)
        return EXIT_USAGE
    relay(0, out, limit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ---- for the daemon (importers) only; the script never gets here ----

from pathlib import Path  # noqa: E402

__all__ = ["LOG_MAX", "RELAY", "relay", "relay_argv"]

RELAY: Path = Path(__file__).resolve()


def relay_argv(python: str, out: Path, limit: int = LOG_MAX) -> list[str]:
    """The command line of a relay appending to ``out``."""
    return [python, "-I", "-S", str(RELAY), "--out", str(out), "--max", str(limit)]
