"""The sandbox's view, as a pure command line and environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hyperhive.sandbox import view as sv

VIEW = sv.SandboxView(
    name="alice", home="/s/agents/alice/state", workspace="/s/agents/alice/work", run="/s/agents/alice/run",
    applied="/s/applied/alice", etc_dir="/s/agents/alice/sandbox",
    system=(("dir", "/usr"), ("link:usr/bin", "/bin"), ("link:usr/lib", "/lib")),
    etc=("ssl", "ld.so.cache"), runtime=("/tmp/ci/.venv", "/tmp/ci/hyperhive"),
    env=(("HOME", "/s/agents/alice/state"), ("PATH", "/usr/bin")),
)


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_nothing_of_the_host_root_is_bound() -> None:
    argv = sv.bwrap_argv(VIEW, ["hive", "harness"])
    assert ("/", "/") not in _pairs(argv, "--ro-bind") + _pairs(argv, "--bind")
    binds = {dst for _, dst in _pairs(argv, "--ro-bind") + _pairs(argv, "--bind")}
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/root", "/home", "/var", "/run", "/s/hive.sqlite",
                   "/s/agents/bob/state", "/s/run/admin.sock", "/s"):
        assert secret not in binds
    assert _pairs(argv, "--bind") == [(VIEW.home, VIEW.home), (VIEW.workspace, VIEW.workspace)]
    ro = _pairs(argv, "--ro-bind")
    assert (VIEW.run, VIEW.run) in ro and (VIEW.applied, VIEW.applied) in ro
    assert ("usr/bin", "/bin") in _pairs(argv, "--symlink")
    for n in ("passwd", "group", "hosts"):
        assert (f"{VIEW.etc_dir}/{n}", f"/etc/{n}") in _pairs(argv, "--ro-bind")


def test_privileges_network_and_environment() -> None:
    argv = sv.bwrap_argv(VIEW, ["hive"])
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--clearenv"):
        assert flag in argv
    assert "--die-with-parent" not in argv  # the harness outlives a daemon restart (issue 16)
    assert "--share-net" not in argv
    assert "--new-session" not in argv  # the harness stays in the backend's process group: SIGTERM reaches it
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == "1000" and argv[argv.index("--gid") + 1] == "1000"
    assert argv.index("--clearenv") < argv.index("--setenv")
    assert _pairs(argv, "--setenv") == list(VIEW.env)
    assert argv[-2:] == ["--", "hive"]


def test_the_fresh_tmp_comes_before_a_runtime_dir_under_it_and_the_root_goes_read_only_after_every_bind() -> None:
    argv = sv.bwrap_argv(VIEW, ["x"])
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    assert argv.index("/tmp/ci/.venv") > tmpfs
    last_bind = max(i for i, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--symlink"))
    assert argv.index("--remount-ro") > last_bind and argv[argv.index("--remount-ro") + 1] == "/"


@pytest.mark.parametrize("name", [
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY",
    "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "CLAUDE_CODE_API_KEY_HELPER", "SSH_AUTH_SOCK", "OPENAI_API_KEY",
    "HYPERHIVE_TOKEN_FILE", "NOTIFY_SOCKET", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "LD_PRELOAD",
    "PYTHONPATH", "CLAUDE_CODE_SECRET_X",
])
def test_no_daemon_credential_or_host_handle_passes(name: str) -> None:
    env = sv.agent_env({name: "secret-value", "PATH": "/root/bin"}, "/h", ["/venv/bin"], gateway_key=False)
    assert name not in env or env[name] != "secret-value"
    assert "secret-value" not in env.values()
    assert "/root/bin" not in env["PATH"]


def test_what_passes_and_what_is_set() -> None:
    parent = {"LANG": "de_DE.UTF-8", "TZ": "UTC", "ANTHROPIC_MODEL": "claude-x", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1",
              "HYPERHIVE_CLAUDE": "/opt/claude"}
    env = sv.agent_env(parent, "/h", ["/venv/bin"], gateway_key=True)
    assert env["LANG"] == "de_DE.UTF-8" and env["TZ"] == "UTC" and env["ANTHROPIC_MODEL"] == "claude-x"
    assert env["HYPERHIVE_CLAUDE"] == "/opt/claude"
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in env  # its name says TOKEN: when in doubt, nothing passes
    assert env["HOME"] == "/h" and env["PATH"].startswith("/venv/bin:")
    assert env["ANTHROPIC_API_KEY"] == sv.PLACEHOLDER_KEY
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{sv.API_PORT}"
    assert env["HTTPS_PROXY"] == env["http_proxy"] == f"http://127.0.0.1:{sv.PROXY_PORT}"
    bare = sv.agent_env({}, "/h", [], gateway_key=False, bridges=False)
    assert "ANTHROPIC_API_KEY" not in bare and "HTTPS_PROXY" not in bare and bare["LANG"] == "C.UTF-8"


def test_etc_texts_hold_the_agent_and_nothing_of_the_hosts() -> None:
    texts = sv.etc_texts("alice", "/h")
    assert "agent:x:1000:1000:hyperhive agent alice:/h:/bin/sh" in texts["passwd"]
    assert all(":x:" in line for line in texts["passwd"].splitlines())  # no hashes, ever
    assert Path("/etc/passwd").read_text() != texts["passwd"]
    assert "alice" in texts["hosts"]


def test_etc_entries_never_include_secrets() -> None:
    for bad in ("shadow", "gshadow", "sudoers", "sudoers.d", "ssh", "passwd", "group", "machine-id"):
        assert bad not in sv.ETC_FILES


def test_runtime_dirs_add_only_what_the_system_dirs_do_not_cover(tmp_path: Path) -> None:
    import hyperhive

    dirs = sv.runtime_dirs(system=("/usr",))
    pkg = str(Path(hyperhive.__file__).resolve().parent)
    assert pkg in dirs or any(pkg.startswith(d + "/") for d in dirs) or pkg.startswith("/usr/")
    assert not any(d == "/usr" or d.startswith("/usr/") for d in dirs)
    assert str(Path(sys.prefix).resolve()) in dirs or sys.prefix.startswith("/usr")
    extra = tmp_path / "claude-bin"
    extra.mkdir()
    assert str(extra.resolve()) in sv.runtime_dirs(system=("/usr",), extra=[str(extra)])
