"""What an agent's sandbox holds: the bubblewrap command line (pure) and the
host paths it is built from.

The view is built up from nothing, never from the host's ``/``:
- read-only: the system dirs (``/usr`` and the merged-usr links, ``/nix/store``
  where it exists), a curated ``/etc`` (never shadow, gshadow, sudoers, ssh
  keys: only what the loader, TLS and name lookups read), the interpreter, the
  venv and the hyperhive package when they live elsewhere, the Claude Code CLI;
  the agent's applied config and its run dir (the daemon's sockets);
- fresh: ``/tmp``, ``/dev``, ``/proc``;
- read-write: the agent's state dir (its HOME) and its workspace;
- generated: ``/etc/passwd``, ``/etc/group`` and ``/etc/hosts`` for the agent.
Then the root is remounted read-only. Every namespace is unshared, the
network included (only a private loopback exists inside), every capability
is dropped, the agent runs as uid 1000 in its own user namespace and can make
no nested one (bwrap also sets no-new-privs). The environment is cleared and rebuilt from an
allowlist: nothing of the daemon's credentials reaches the sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive.settings import CLAUDE_BINARY, CLAUDE_SILENCE_SECONDS

__all__ = [
    "AGENT_GID",
    "AGENT_UID",
    "API_PORT",
    "ETC_FILES",
    "PLACEHOLDER_KEY",
    "PROXY_PORT",
    "SandboxView",
    "agent_env",
    "bwrap_argv",
    "etc_texts",
    "host_system_entries",
    "runtime_dirs",
]

AGENT_UID = 1000  # the agent's uid and gid inside its user namespace
AGENT_GID = 1000
API_PORT = 8787  # inside the sandbox's own network: the harness's relay to the gateway
PROXY_PORT = 3128  # … and to the egress proxy
PLACEHOLDER_KEY = "hyperhive-gateway-placeholder"  # what the agent holds; the gateway swaps in the real key

# The system: bound read-only when a directory, recreated when a symlink (merged /usr).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix/store")
# What of the host's /etc a harness and its tools read: the loader, TLS roots, name
# service switches, time zone, the Debian alternatives links. Nothing secret.
ETC_FILES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates", "ca-certificates.conf",
    "pki", "nsswitch.conf", "resolv.conf", "host.conf", "gai.conf", "localtime", "timezone",
    "alternatives", "protocols", "services", "mime.types", "os-release", "debian_version",
    "terminfo", "inputrc", "bash.bashrc", "profile", "python3", "python3.11",
)

# The environment inside: these names pass from the daemon's, when set…
_PASS_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", CLAUDE_BINARY.env, CLAUDE_SILENCE_SECONDS.env,
             "ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL",
             "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL")
# … and CLAUDE_CODE_* settings, unless the name says it holds a secret.
_PASS_PREFIX = "CLAUDE_CODE_"
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASS|AUTH|CRED|HEADER|COOKIE", re.IGNORECASE)


@dataclass(frozen=True)
class SandboxView:
    """Everything ``bwrap_argv`` needs, as plain paths and strings."""

    name: str
    home: str  # the agent's state dir: HOME, read-write
    workspace: str  # read-write
    run: str  # the daemon's sockets for this agent, read-only
    applied: str  # its applied config, read-only
    etc_dir: str  # the daemon-written passwd, group, hosts
    system: tuple[tuple[str, str], ...]  # ("dir" | "link:<target>", path)
    etc: tuple[str, ...]  # host /etc entries to bind read-only (names under /etc)
    runtime: tuple[str, ...] = ()  # interpreter, venv, package dirs outside the system dirs
    env: tuple[tuple[str, str], ...] = ()
    extra_ro: tuple[str, ...] = field(default=())  # e.g. the Claude Code CLI's own dir


def host_system_entries(dirs: Iterable[str] = SYSTEM_DIRS) -> tuple[tuple[str, str], ...]:
    """The system dirs as they are on this host: a symlink (merged /usr) is
    recreated as the same link, a directory is bound, a missing one skipped."""
    out: list[tuple[str, str]] = []
    for d in dirs:
        if os.path.islink(d):
            out.append((f"link:{os.readlink(d)}", d))
        elif os.path.isdir(d):
            out.append(("dir", d))
    return tuple(out)


def host_etc_entries(names: Iterable[str] = ETC_FILES) -> tuple[str, ...]:
    return tuple(n for n in names if os.path.lexists(os.path.join("/etc", n)))


def _covered(path: Path, roots: Iterable[str]) -> bool:
    return any(path == Path(r) or path.is_relative_to(r) for r in roots)


def runtime_dirs(system: Iterable[str] = SYSTEM_DIRS, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """What running the harness needs beyond the system dirs: the interpreter's
    prefix, the venv and the hyperhive package (an editable install lives in the
    checkout), plus ``extra`` (a CLI outside /usr). Resolved, deduplicated, nested
    ones dropped."""
    import hyperhive

    system = tuple(system)
    wanted = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent,
              Path(hyperhive.__file__).resolve().parent, *(Path(e) for e in extra)}
    real = sorted({d.resolve() for d in wanted if d.exists()})
    # /usr/bin/python3 → /usr/local/…: resolved paths under the system dirs are bound already.
    real = [d for d in real if not _covered(d, system)]
    return tuple(str(d) for d in real if not any(d != o and d.is_relative_to(o) for o in real))


def claude_dir(env: Mapping[str, str]) -> str | None:
    """The directory of the Claude Code CLI the claude driver will run."""
    binary = env.get(CLAUDE_BINARY.env) or shutil.which(CLAUDE_BINARY.default, path=env.get("PATH"))
    if not binary:
        return None
    real = os.path.realpath(binary)
    return os.path.dirname(real) if os.path.exists(real) else None


def etc_texts(name: str, home: str) -> dict[str, str]:
    """The agent's own /etc/passwd, /etc/group and /etc/hosts."""
    return {
        "passwd": (f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                   f"agent:x:{AGENT_UID}:{AGENT_GID}:hyperhive agent {name}:{home}:/bin/sh\n"
                   f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "group": f"root:x:0:\nagent:x:{AGENT_GID}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    }


def agent_env(parent: Mapping[str, str], home: str, path_dirs: Sequence[str], gateway_key: bool,
              bridges: bool = True) -> dict[str, str]:
    """The whole environment of the harness (inside the sandbox and, unsandboxed,
    of its process): an allowlist of the daemon's settings, never a credential.

    ``gateway_key``: the gateway holds the daemon's credential, so the agent
    gets a placeholder to send (the gateway replaces it). ``bridges``: the
    harness relays the API and the proxy on fixed loopback ports (its own network).
    """
    env = {k: v for k, v in parent.items()
           if k in _PASS_ENV or (k.startswith(_PASS_PREFIX) and not _SECRET_NAME.search(k))}
    env.setdefault("LANG", "C.UTF-8")
    env.update({
        "PATH": ":".join(dict.fromkeys([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"])),
        "HOME": home, "USER": "agent", "LOGNAME": "agent", "SHELL": "/bin/sh", "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
    })
    if bridges:
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        env.update({"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{API_PORT}",
                    "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    if gateway_key:
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
    return env


def bwrap_argv(view: SandboxView, inner: Sequence[str]) -> list[str]:
    """The bubblewrap command line around ``inner`` (a pure function)."""
    argv = ["bwrap"]
    for kind, path in view.system:
        if kind.startswith("link:"):
            argv += ["--symlink", kind[len("link:"):], path]
        else:
            argv += ["--ro-bind", path, path]
    argv += ["--dir", "/etc"]
    for n in view.etc:
        argv += ["--ro-bind", f"/etc/{n}", f"/etc/{n}"]
    for n in ("passwd", "group", "hosts"):
        argv += ["--ro-bind", f"{view.etc_dir}/{n}", f"/etc/{n}"]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # After the fresh /tmp: a checkout (venv, package) that lives under /tmp is bound back.
    for d in (*view.runtime, *view.extra_ro):
        argv += ["--ro-bind", d, d]
    argv += [
        "--bind", view.home, view.home,
        "--bind", view.workspace, view.workspace,
        "--ro-bind", view.run, view.run,
        "--ro-bind", view.applied, view.applied,
        "--remount-ro", "/",
        "--unshare-all", "--unshare-user", "--uid", str(AGENT_UID), "--gid", str(AGENT_GID),
        "--disable-userns",  # no nested user namespace: no capabilities anywhere inside, even "fake" ones
        "--hostname", view.name,
        "--cap-drop", "ALL",
        # No --die-with-parent: the harness outlives a daemon restart or crash (issue 16);
        # a stop ends it through its process group and its cgroup.
        "--chdir", view.home,
        "--clearenv",
    ]
    for k, v in view.env:
        argv += ["--setenv", k, v]
    return [*argv, "--", *inner]
