"""Where a setting's value comes from: the flag (before or after the verb for
the global ones), else its environment variable, else its default; and what a
value the daemon cannot use becomes (BadSetting)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pytest

from hyperhive import cli
from hyperhive.errors import BadSetting, StartupError
from hyperhive.settings import (
    AGENT_TEMPLATE,
    CLAUDE_BINARY,
    CLAUDE_SILENCE_SECONDS,
    ENV_SETTINGS,
    NIXOS_CONF_DIR,
    NIXOS_FLAKE,
    NIXOS_POLL_SECONDS,
    SETTINGS,
    Setting,
    Settings,
    fill_globals,
    from_args,
)

BY_NAME = {s.name: s for s in SETTINGS}
WITH_ENV = [s for s in SETTINGS if s.env]
GLOBAL = [s for s in SETTINGS if s.scope == "global"]


def serve_ns(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(list(argv))


def test_every_setting_is_declared_once_with_its_parts() -> None:
    names = [s.name for s in (*SETTINGS, *ENV_SETTINGS)]
    assert len(names) == len(set(names))
    envs = [s.env for s in (*SETTINGS, *ENV_SETTINGS) if s.env]
    assert len(envs) == len(set(envs)) and all(e.startswith("HYPERHIVE_") for e in envs)
    for s in (*SETTINGS, *ENV_SETTINGS):
        assert s.help.strip() and s.scope in ("global", "serve", "env"), s.name
        assert s.scope != "env" or s.env, f"{s.name}: an env-only setting needs its variable"


def test_the_daemon_wide_variables_are_declared() -> None:
    assert {s.env for s in WITH_ENV} >= {"HYPERHIVE_STATE_DIR", "HYPERHIVE_TOKEN_FILE", "HYPERHIVE_LOG_FORMAT"}
    assert {s.env for s in ENV_SETTINGS} == {
        "HYPERHIVE_FLAKE", "HYPERHIVE_AGENT_TEMPLATE", "HYPERHIVE_NIXOS_CONF_DIR", "HYPERHIVE_NIXOS_POLL_SECONDS",
        "HYPERHIVE_CLAUDE", "HYPERHIVE_CLAUDE_SILENCE_SECONDS"}


# A value for each setting with a variable: (as typed, as read).
ENV_SAMPLE: dict[str, tuple[str, Any]] = {
    "state_dir": ("/srv/hive", Path("/srv/hive")),
    "token_file": ("/run/keys/token", "/run/keys/token"),
    "log_format": ("json", "json"),
    "agents_dir": ("/mnt/agents", "/mnt/agents"),
}


def test_env_sample_covers_every_variable() -> None:
    assert set(ENV_SAMPLE) == {s.name for s in WITH_ENV}


@pytest.mark.parametrize("s", WITH_ENV, ids=lambda s: s.name)
def test_the_variable_is_read_when_no_flag_is_given(s: Setting[Any]) -> None:
    raw, want = ENV_SAMPLE[s.name]
    assert getattr(from_args(serve_ns("serve"), env={s.env: raw}), s.name) == want
    # empty counts as unset
    default = getattr(from_args(serve_ns("serve"), env={}), s.name)
    assert getattr(from_args(serve_ns("serve"), env={s.env: ""}), s.name) == default


@pytest.mark.parametrize("s", WITH_ENV, ids=lambda s: s.name)
def test_the_flag_wins_over_the_variable(s: Setting[Any]) -> None:
    raw, want = ENV_SAMPLE[s.name]
    other = {"state_dir": "/elsewhere", "token_file": "/other/token", "log_format": "console",
             "agents_dir": "/other/agents"}[s.name]
    got = getattr(from_args(serve_ns("serve", s.flag, raw), env={s.env: other}), s.name)
    assert got == want


@pytest.mark.parametrize("s", GLOBAL, ids=lambda s: s.name)
@pytest.mark.parametrize("verb", [["serve"], ["ls"], ["inbox"], ["questions"], ["logs", "a"], ["url"],
                                  ["answer", "1"], ["mcp", "--socket", "s"]])
def test_a_global_flag_works_before_and_after_the_verb(s: Setting[Any], verb: list[str]) -> None:
    raw, want = ENV_SAMPLE.get(s.name, ("/srv/hive", Path("/srv/hive")))
    before = fill_globals(serve_ns(s.flag, raw, *verb), env={})
    after = fill_globals(serve_ns(verb[0], s.flag, raw, *verb[1:]), env={})
    assert Path(getattr(before, s.name)) == Path(getattr(after, s.name)) == Path(want)
    # after the verb wins over before it; neither: the variable, else the default
    both = fill_globals(serve_ns(s.flag, "/first", verb[0], s.flag, raw, *verb[1:]), env={})
    assert Path(getattr(both, s.name)) == Path(want)
    assert Path(getattr(fill_globals(serve_ns(*verb), env={s.env: raw}), s.name)) == Path(want)
    assert getattr(fill_globals(serve_ns(*verb), env={}), s.name) == s.default


def test_serve_settings_from_either_order(tmp_path: Path) -> None:
    a = from_args(serve_ns("--state-dir", str(tmp_path), "serve", "--listen", "127.0.0.1:9"), env={})
    b = from_args(serve_ns("serve", "--listen", "127.0.0.1:9", "--state-dir", str(tmp_path)), env={})
    assert a == b and a.state_dir == tmp_path and a.listen == "127.0.0.1:9"


def test_the_harness_keeps_its_own_state_dir() -> None:
    ns = fill_globals(serve_ns("--state-dir", "/hive", "harness", "--name", "a", "--socket", "s",
                               "--state-dir", "/agent"), env={})
    assert (ns.state_dir, ns.agent_state) == (Path("/hive"), "/agent")


# One value each setting refuses (flags parse their type first; these get past it).
BAD: dict[str, Any] = {
    "backend": "docker", "driver": "gpt", "sandbox": "yes", "log_format": "xml", "listen": "nope",
    "agent_port_base": 80, "agent_memory_mb": 1, "agent_pids": 1, "agent_uid_base": 5, "max_active_turns": -1,
    "boot_timeout_seconds": 0.0, "allowed_host": "two words", "proxy_resolve": "x=1",
}


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.choices or s.bounds or s.type in (int, float)
                               or s.name in BAD], ids=lambda s: s.name)
def test_a_bad_value_is_a_bad_setting(s: Setting[Any]) -> None:
    bad = BAD.get(s.name, -1.0)
    with pytest.raises(BadSetting, match=s.name) as info:
        Settings(**{s.name: bad})
    assert isinstance(info.value, StartupError) and "\n" not in info.value.message


@pytest.mark.parametrize(("env", "raw"), [("HYPERHIVE_LOG_FORMAT", "loud")])
def test_a_bad_variable_is_a_bad_setting(env: str, raw: str) -> None:
    with pytest.raises(BadSetting):
        from_args(serve_ns("serve"), env={env: raw})


def test_bounds_take_their_ends() -> None:
    for s in SETTINGS:
        if s.bounds:
            lo, hi = s.bounds
            assert getattr(Settings(**{s.name: s.type(lo)}), s.name) == lo
            if hi != math.inf:
                assert getattr(Settings(**{s.name: s.type(hi)}), s.name) == hi


@pytest.mark.parametrize(("s", "raw", "want"), [
    (NIXOS_FLAKE, "github:o/r?dir=nix", "github:o/r?dir=nix"),
    (AGENT_TEMPLATE, "/t.nix", Path("/t.nix")),
    (NIXOS_CONF_DIR, "/tmp/confs", Path("/tmp/confs")),
    (NIXOS_POLL_SECONDS, "0.1", 0.1),
    (CLAUDE_BINARY, "/opt/claude", "/opt/claude"),
    (CLAUDE_SILENCE_SECONDS, "5", 5.0),
], ids=lambda v: v.name if isinstance(v, Setting) else "")
def test_env_only_settings_read_their_variable(s: Setting[Any], raw: str, want: Any) -> None:
    assert s.read({s.env: raw}) == want
    assert s.read({}) == s.read({s.env: ""}) == s.default


def test_env_only_defaults_are_the_old_ones() -> None:
    assert (NIXOS_CONF_DIR.default, NIXOS_POLL_SECONDS.default) == (Path("/etc/nixos-containers"), 2.0)
    assert (CLAUDE_BINARY.default, CLAUDE_SILENCE_SECONDS.default) == ("claude", 1200.0)
    assert AGENT_TEMPLATE.default.name == "agent.nix"


def test_a_variable_that_does_not_parse_is_a_bad_setting() -> None:
    with pytest.raises(BadSetting, match="HYPERHIVE_NIXOS_POLL_SECONDS.*'soon' is not a float"):
        NIXOS_POLL_SECONDS.read({"HYPERHIVE_NIXOS_POLL_SECONDS": "soon"})
