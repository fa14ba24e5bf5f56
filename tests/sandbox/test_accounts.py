"""Agents' own host uids, their dirs' owners and modes, and link-proof file access."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.sandbox import accounts, safefs

BASE = 1_900_000_000


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    for n in ("a", "b", "c"):
        p.create_agent(AgentName(n), AgentConfig())
    return p


def test_uids_are_sticky_and_distinct(paths: StatePaths) -> None:
    a = accounts.allocate_uid(paths, AgentName("a"), BASE)
    b = accounts.allocate_uid(paths, AgentName("b"), BASE)
    assert (a, b) == (BASE, BASE + 1)
    assert accounts.allocate_uid(paths, AgentName("a"), BASE) == a
    (paths.agent(AgentName("a")) / "uid").unlink()
    assert accounts.allocate_uid(paths, AgentName("c"), BASE) == BASE  # a's freed uid is reused
    assert accounts.allocate_uid(paths, AgentName("a"), BASE) == BASE + 2


def test_a_bad_or_linked_uid_file_is_not_believed(paths: StatePaths, tmp_path: Path) -> None:
    f = paths.agent(AgentName("a")) / "uid"
    f.write_text("0\n")
    assert accounts.allocate_uid(paths, AgentName("a"), BASE) == BASE  # out of range: reallocated
    f.unlink()
    (tmp_path / "elsewhere").write_text(f"{BASE + 7}\n")
    f.symlink_to(tmp_path / "elsewhere")
    assert accounts.allocate_uid(paths, AgentName("a"), BASE) == BASE
    assert not f.is_symlink() and (tmp_path / "elsewhere").read_text() == f"{BASE + 7}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_prepare_dirs_gives_the_agent_its_state_and_workspace_only(paths: StatePaths) -> None:
    name = AgentName("a")
    (paths.state(name) / "old-root-file").write_text("x")
    (paths.state(name) / "link").symlink_to("/etc/passwd")
    acct = accounts.Account(BASE + 5, BASE + 5, True)
    etc = accounts.prepare_dirs(paths, name, acct)
    for d in (paths.state(name), paths.workspace(name)):
        st = d.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (acct.uid, acct.gid, 0o700)
    assert (paths.state(name) / "old-root-file").stat().st_uid == acct.uid
    assert os.lstat(paths.state(name) / "link").st_uid == acct.uid and Path("/etc/passwd").stat().st_uid == 0
    for d in (paths.agents, paths.agent(name)):
        assert d.stat().st_uid == 0 and stat.S_IMODE(d.stat().st_mode) == 0o711
    assert paths.run(name).stat().st_uid == 0
    assert "agent:x:1000" in (etc / "passwd").read_text()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(paths.socket(name)))
    accounts.own_sockets(paths, name, acct)
    st = paths.socket(name).lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (acct.uid, 0o600)
    s.close()


def test_unreachable_names_the_dir_that_blocks(tmp_path: Path) -> None:
    from support import passable

    passable(tmp_path)
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    os.chmod(tmp_path / "a", 0o700)
    assert accounts.unreachable(d) == tmp_path / "a"
    os.chmod(tmp_path / "a", 0o711)
    assert accounts.unreachable(d) is None


def test_safefs_never_follows_a_link(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "real").mkdir(parents=True)
    (base / "real" / "f").write_text("real")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "f").write_text("host secret")
    (base / "linkdir").symlink_to(tmp_path / "target")
    (base / "real" / "linkfile").symlink_to(tmp_path / "target" / "f")
    os.mkfifo(base / "real" / "fifo")
    assert safefs.read_nofollow(base, "real", "f") == b"real"
    assert safefs.read_nofollow(base, "linkdir", "f") is None
    assert safefs.read_nofollow(base, "real", "linkfile") is None
    assert safefs.read_nofollow(base, "real", "fifo") is None  # never blocks on a fifo
    assert safefs.is_regular_nofollow(base, "real", "f")
    assert not safefs.is_regular_nofollow(base, "linkdir", "f")
    assert not safefs.is_regular_nofollow(base, "real", "missing")
    with pytest.raises(ValueError):
        safefs.read_nofollow(base, "..", "f")
    with pytest.raises(ValueError):
        safefs.read_nofollow(base, "real", "a/b")
    with pytest.raises(OSError):
        safefs.append_nofollow(base / "real" / "linkfile")
    fd = safefs.append_nofollow(base / "real" / "new.log")
    os.write(fd, b"line\n")
    os.close(fd)
    assert (base / "real" / "new.log").read_text() == "line\n"
    assert (tmp_path / "target" / "f").read_text() == "host secret"
