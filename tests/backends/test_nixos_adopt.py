"""The nixos backend adopts a container still running at boot (issue 16),
against the fake `machinectl`/`nixos-container` (tests/nixos_fakes.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nixos_fakes import Fakes, install

from hyperhive.backends import nixos_argv as argv
from hyperhive.backends.nixos import NixosBackend
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths

A = AgentName("alice")


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = install(tmp_path / "fake")
    for key, value in f.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HYPERHIVE_NIXOS_POLL_SECONDS", "0.01")  # the watcher's interval (default 2 s)
    return f


def make(tmp_path: Path) -> NixosBackend:
    paths = StatePaths(tmp_path / "state")
    if not paths.agent(A).exists():
        paths.create_agent(A, AgentConfig())
    return NixosBackend.from_env(paths)


@pytest.fixture
def backends(tmp_path: Path, fakes: Fakes) -> Iterator[list[NixosBackend]]:
    made: list[NixosBackend] = []
    yield made
    for b in made:
        b.close()  # no watcher may poll the next test's fakes


def test_a_running_container_is_adopted_watched_and_never_started(tmp_path: Path, fakes: Fakes,
                                                                    backends: list[NixosBackend]) -> None:
    first = make(tmp_path)
    backends.append(first)
    h = first.start(A, "builtin", lambda rc, reason: None)
    first.release(h)  # the daemon stopping with its agents kept
    first.close()
    calls = len(fakes.calls())
    second = make(tmp_path)
    backends.append(second)
    exits: list[tuple[int | None, str | None]] = []
    reported = threading.Event()

    def on_exit(rc: int | None, reason: str | None) -> None:
        exits.append((rc, reason))
        reported.set()

    adopted = second.adopt(A, "builtin", on_exit)
    assert adopted is not None and adopted.pid == 4242 and adopted.container == "hh-alice"
    assert fakes.calls(polls=True)[calls:][0] == argv.show_argv(A)  # asked machined, started nothing
    assert not [c for c in fakes.calls()[calls:] if c[0] == "nixos-container"]
    (second.paths.state(A) / "harness.exit").write_text("exit-code exited 4\n")
    fakes.vanish("hh-alice")  # watched again: its end is reported
    assert reported.wait(5) and exits == [(4, None)]


def test_a_container_not_running_is_not_adopted(tmp_path: Path, fakes: Fakes, backends: list[NixosBackend]) -> None:
    b = make(tmp_path)
    backends.append(b)
    assert b.adopt(A, "builtin", lambda rc, reason: None) is None  # machined knows no such machine
    fakes.fail("machinectl", "show", "Failed to connect to bus\n")
    assert b.adopt(A, "builtin", lambda rc, reason: None) is None  # nor when it cannot be asked
