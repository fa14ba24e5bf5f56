"""hyperhive.settings: the declared settings, their validation and their CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from hyperhive import cli
from hyperhive.errors import BadSetting
from hyperhive.settings import SETTINGS, Settings, add_arguments, default_state_dir, from_args

# A non-default value for every setting, as it is typed on the command line.
SAMPLE = {
    "state_dir": ("/srv/hive", Path("/srv/hive")),
    "log_format": ("console", "console"),
    "message_retention_days": ("7", 7.0),
    "boot_timeout_seconds": ("60", 60.0),
    "listen": ("0.0.0.0:9000", "0.0.0.0:9000"),
    "backend": ("local", "local"),
    "driver": ("builtin", "builtin"),
    "sandbox": ("off", "off"),
    "db_synchronous": ("normal", "normal"),
    "keep_agents": ("yes", True),
    "recv_default_seconds": ("12.5", 12.5),
    "recv_cap_seconds": ("60", 60.0),
    "permission_ttl_seconds": ("120", 120.0),
    "pull_max_bundle_bytes": ("2097152", 2097152),
    "pull_timeout_seconds": ("30", 30.0),
    "prices": ("/etc/hive/prices.json", "/etc/hive/prices.json"),
    "usage_retention_days": ("30", 30.0),
    "fleet_budget_usd": ("50", 50.0),
    "fleet_budget_per": ("week", "week"),
    "budget_question_ttl_seconds": ("600", 600.0),
    "hard_cap_factor": ("2", 2.0),
    "min_free_mb": ("128", 128),
    "agents_dir": ("/mnt/agents", "/mnt/agents"),
    "restart_backoff_seconds": ("0.25", 0.25),
    "restart_backoff_max_seconds": ("90", 90.0),
    "agent_port_base": ("9000", 9000),
    "vacuum_interval_seconds": ("0.5", 0.5),
    "token_file": ("/run/hive/token", "/run/hive/token"),
    "allowed_host": ("hive.example", "hive.example"),
    "heartbeat_seconds": ("0.5", 0.5),
    "disk_interval_seconds": ("5", 5.0),
    "notify": ("notify-send hive", "notify-send hive"),
    "max_active_turns": ("2", 2),
    "hibernate_after_seconds": ("3", 3.0),
    "agent_memory_mb": ("1024", 1024),
    "agent_pids": ("128", 128),
    "agent_uid_base": ("2000000", 2000000),
    "proxy_resolve": ("pkgs.internal:443=10.0.0.5", "pkgs.internal:443=10.0.0.5"),
    "agent_listen": ("0.0.0.0:7900", "0.0.0.0:7900"),
    "ray_address": ("10.0.0.5:6379", "10.0.0.5:6379"),
}
BY_NAME = {s.name: s for s in SETTINGS}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p, "global")
    add_arguments(p)
    return p


def test_sample_covers_every_setting() -> None:
    assert set(SAMPLE) == set(BY_NAME)


def test_settings_match_dataclass() -> None:
    assert {f.name for f in dataclasses.fields(Settings)} == set(BY_NAME)
    defaults = Settings()  # the dataclass's defaults are the declared ones (no second copy)
    for s in SETTINGS:
        assert getattr(defaults, s.name) == s.default, s.name


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_help(setting) -> None:
    assert isinstance(setting.help, str)
    assert setting.help.strip()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_a_flag(setting) -> None:
    p = parser()
    text = p.format_help()
    assert flag(setting.name) in text
    assert setting.help.split()[0] in text
    # default when absent (and no environment variable)
    assert getattr(from_args(p.parse_args([]), env={}), setting.name) == (
        Path(setting.default).absolute() if setting.name == "state_dir" else setting.default)
    # parsed and typed when given
    raw, want = SAMPLE[setting.name]
    assert getattr(p.parse_args([flag(setting.name), raw]), setting.name) == want


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.choices], ids=lambda s: s.name)
def test_flag_refuses_bad_choice(setting, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([flag(setting.name), "no-such-choice"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.type is float], ids=lambda s: s.name)
def test_float_flag_refuses_text(setting, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([flag(setting.name), "soon"])
    assert "invalid float value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:7800", "127.0.0.1", 7800),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:8080", "::1", 8080),
        ("example.org:80", "example.org", 80),
    ],
)
def test_good_listen(listen: str, host: str, port: int) -> None:
    s = Settings(state_dir=Path("/s"), listen=listen)
    assert (s.listen_host, s.listen_port) == (host, port)


@pytest.mark.parametrize(
    "listen",
    ["", "7800", "localhost", ":7800", "localhost:", "localhost:http", "localhost:65536",
     "localhost:99999", "localhost:-1", "localhost: 80", "localhost:80 ", "localhost:8.0", ":"],
)
def test_bad_listen(listen: str) -> None:
    with pytest.raises(BadSetting, match="listen"):
        Settings(state_dir=Path("/s"), listen=listen)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("backend", "docker"),
        ("backend", ""),
        ("driver", "gpt"),
        ("sandbox", "yes"),
        ("sandbox", "ON"),
    ],
)
def test_bad_choice(name: str, value: str) -> None:
    with pytest.raises(BadSetting, match=name):
        Settings(state_dir=Path("/s"), **{name: value})


@pytest.mark.parametrize("name", [s.name for s in SETTINGS if s.type is float])
def test_negative_seconds(name: str) -> None:
    with pytest.raises(BadSetting, match=name):
        Settings(state_dir=Path("/s"), **{name: -1.0})
    bounds = BY_NAME[name].bounds
    lowest: Any = bounds[0] if bounds else 0.0
    assert getattr(Settings(state_dir=Path("/s"), **{name: lowest}), name) == lowest


@pytest.mark.parametrize("base", [0, 1023, 64636, 70000])
def test_bad_agent_port_base(base: int) -> None:
    with pytest.raises(BadSetting, match="agent_port_base"):
        Settings(state_dir=Path("/s"), agent_port_base=base)


def test_settings_frozen() -> None:
    s = Settings(state_dir=Path("/s"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.listen = "x:1"  # type: ignore[misc]


def test_from_args_defaults(tmp_path: Path) -> None:
    ns = parser().parse_args(["--state-dir", str(tmp_path)])
    s = from_args(ns, env={})
    assert s == Settings(state_dir=tmp_path)


def test_from_args_values(tmp_path: Path) -> None:
    argv = []
    for name, (raw, _) in SAMPLE.items():
        argv += [flag(name), raw]
    s = from_args(parser().parse_args(argv))
    for name, (_, want) in SAMPLE.items():
        assert getattr(s, name) == want, name


def test_from_args_makes_state_dir_absolute() -> None:
    s = from_args(parser().parse_args(["--state-dir", "rel/state"]))
    assert s.state_dir.is_absolute()
    assert s.state_dir == Path("rel/state").absolute()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--listen", "nope"], "listen"),
        (["--listen", "host:70000"], "listen"),
        (["--recv-cap-seconds", "-5"], "recv_cap_seconds"),
        (["--agent-memory-mb", "10"], "agent_memory_mb"),
        (["--agent-pids", "0"], "agent_pids"),
        (["--agent-uid-base", "0"], "agent_uid_base"),
        (["--pull-max-bundle-bytes", "1000"], "pull_max_bundle_bytes"),
        (["--pull-timeout-seconds", "0"], "pull_timeout_seconds"),
        (["--proxy-resolve", "pkgs.internal=10.0.0.5"], "port"),
        (["--proxy-resolve", "x:1=not-an-ip"], "proxy_resolve"),
        (["--allowed-host", "two words"], "allowed_host"),
        (["--allowed-host", "evil.test/path"], "allowed_host"),
    ],
)
def test_from_args_validates(argv: list[str], needle: str) -> None:
    with pytest.raises(BadSetting, match=needle):
        from_args(parser().parse_args(argv))


def test_cli_serve_uses_settings(tmp_path: Path) -> None:
    ns = cli._parser().parse_args(
        ["--state-dir", str(tmp_path), "serve", "--listen", "127.0.0.1:9999", "--sandbox", "on"]
    )
    s = from_args(ns)
    assert (s.state_dir, s.listen, s.sandbox, s.backend) == (tmp_path, "127.0.0.1:9999", "on", "local")


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYPERHIVE_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path
    monkeypatch.setenv("HYPERHIVE_STATE_DIR", "")
    assert default_state_dir() == Path("./.hive")
    monkeypatch.delenv("HYPERHIVE_STATE_DIR")
    assert default_state_dir() == Path("./.hive")


def test_allowed_host_repeats_and_joins() -> None:
    s = from_args(parser().parse_args(["--allowed-host", "Hive.Example", "--allowed-host", "proxy.test:443,[::1]"]))
    assert s.allowed_host == "Hive.Example,proxy.test:443,[::1]"
    assert s.allowed_hosts == ("hive.example", "proxy.test:443", "[::1]")
    assert from_args(parser().parse_args([])).allowed_hosts == ()
