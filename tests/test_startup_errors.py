"""`hive serve` that cannot start as configured says why in one line on
stderr and exits 1, never with a traceback (errors.StartupError)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import passable

from hyperhive.errors import BadTokenFile, StartupError
from hyperhive.web.dashboard.access import load_token


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERHIVE_")}
    return {**env, **extra}


def serve(state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive", "serve", "--state-dir", str(state), "--listen", "127.0.0.1:0", *args],
        capture_output=True, text=True, timeout=60, env=env or _env(), stdin=subprocess.DEVNULL)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hive: "), r.stderr
    return lines[0]


# Every setting's refusal is a unit test (test_settings_sources); here, the way out of the process.
# e2e: each starts `hive serve` (a daemon that refuses to start).
@pytest.mark.e2e
@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--listen", "nowhere"], {}, "listen must be HOST:PORT, got 'nowhere'"),
    ([], {"HYPERHIVE_LOG_FORMAT": "loud"}, "$HYPERHIVE_LOG_FORMAT: log_format must be one of auto, console, json"),
])
def test_a_bad_setting(tmp_path: Path, args: list[str], env: dict[str, str], needle: str) -> None:
    line = one_line(serve(tmp_path / "state", *args, env=_env(**env)))
    assert needle in line
    assert not (tmp_path / "state").exists()  # refused before anything was made


@pytest.mark.e2e
def test_a_missing_token_file(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path / "state", "--token-file", str(tmp_path / "nope")))
    assert line == f"hive: cannot read the token file {tmp_path / 'nope'}: No such file or directory"
    assert not (tmp_path / "state").exists()


@pytest.mark.e2e
def test_no_token_file_for_an_address_that_is_not_loopback(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path / "state", "--listen", "0.0.0.0:0"))
    assert "not loopback" in line and "--token-file" in line


@pytest.mark.e2e
def test_a_state_dir_another_daemon_holds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    with open(state / "run" / "daemon.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running daemon holds it
        line = one_line(serve(state))
    assert line == f"hive: another daemon is running on {state} (it holds run/daemon.lock)"
    assert not (state / "hive.sqlite").exists()


@pytest.mark.e2e  # gets as far as the backend: the dashboard is bound, the store opened
def test_sandbox_on_without_bubblewrap(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    passable(tmp_path)  # a root daemon's agent uids must reach the state dir, or that is the reason given
    r = serve(tmp_path / "state", "--sandbox", "on", env=_env(PATH=str(empty)))
    assert one_line(r) == "hive: --sandbox on, but the sandbox cannot be had: bwrap is not installed"
    assert '"event": "daemon.stopped"' in r.stdout  # what had started was stopped


def test_load_token_refusals_are_bad_token_files(tmp_path: Path) -> None:
    assert load_token("127.0.0.1", "") is None  # loopback, none given: the daemon's own, made later
    short = tmp_path / "short"
    short.write_text("abc\n")
    for host, given, needle in (("0.0.0.0", "", "not loopback"), ("0.0.0.0", str(tmp_path / "missing"), "cannot read"),
                                ("127.0.0.1", str(short), "shorter than 16")):
        with pytest.raises(BadTokenFile, match=needle) as info:
            load_token(host, given)
        assert isinstance(info.value, StartupError)
    good = tmp_path / "token"
    good.write_text("s3cret-operator-token\n")
    assert load_token("0.0.0.0", str(good)) == "s3cret-operator-token"
    assert load_token("127.0.0.1", str(good), tmp_path / "run") == "s3cret-operator-token"  # a given file wins
    assert not (tmp_path / "run").exists()


def test_the_token_file_variable_reaches_load_token_through_the_settings(tmp_path: Path) -> None:
    from hyperhive import cli
    from hyperhive.settings import from_args

    s = from_args(cli._parser().parse_args(["serve"]), env={"HYPERHIVE_TOKEN_FILE": str(tmp_path / "t")})
    assert s.token_file == str(tmp_path / "t")
    with pytest.raises(BadTokenFile, match="cannot read"):
        load_token(s.listen_host, s.token_file)
