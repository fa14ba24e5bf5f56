"""A hostile clone (issue 14): the daemon (root) asks an agent's clone what it
holds for `hive ls`, the dashboard and every purge. Nothing the clone plants
may run a command on the host, make the daemon read outside the clone, hang
it or flood it; what cannot be read safely is reported unknown (which a purge
treats as work to keep), never clean.

The git that looks inside runs in a real bubblewrap sandbox: e2e tier."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_config_repo import plant_traps
from workspace_status_repos import Layout, commit, git, make_layout

import hyperhive.workspace_status_probe as probe
from hyperhive.workspace_status import lost_work, work_status
from hyperhive.workspace_status_refs import RefsUnreadable, read_clone_refs

pytestmark = pytest.mark.e2e


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    return make_layout(tmp_path)


def evil_command(marks: Path) -> str:
    """A command that works inside a sandbox too (/bin/sh is there): it tries to
    write the host's marks file and the clone itself."""
    return f"sh -c 'echo ran >> {marks}; echo ran > /work/ran-inside; cat'"


def test_traps_in_the_clones_config_never_run(lay: Layout, tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    plant_traps(lay.work, marks)  # hooks, hooksPath, fsmonitor, filters, diff drivers, pager, gpg, ssh, worktree
    git(lay.work, "config", "alias.status", f"!{evil_command(marks)}")
    git(lay.work, "config", "alias.rev-list", f"!{evil_command(marks)}")
    git(lay.work, "config", "filter.evil.clean", evil_command(marks))  # one that could run in the sandbox
    git(lay.work, "config", "core.fsmonitor", evil_command(marks))
    git(lay.work, "config", "--unset", "core.worktree")
    (lay.work / "README").write_text("HELLO\n")  # the same size: status must hash it, through the filter
    (lay.work / "new.txt").write_text("untracked\n")
    st = work_status(lay.paths, lay.name)
    assert not marks.exists(), marks.read_text()
    assert not (lay.work / "ran-inside").exists()  # the clone is read-only to the looking git
    assert st.branch == "hive/a" and lost_work(st) is not None  # dirty, or unknown: never clean


def test_a_worktree_elsewhere_gives_no_answer_from_elsewhere(lay: Layout, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "secret-untracked").write_text("x")
    git(lay.work, "config", "core.worktree", str(other))
    st = work_status(lay.paths, lay.name)
    assert st.dirty is False  # /work was looked at, not the path the config names


@pytest.mark.parametrize("kind", ["gitdir-file", "symlink"])
def test_a_git_dir_elsewhere_is_never_followed(lay: Layout, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"  # a repo the daemon must not read: it names another branch
    subprocess.run(["git", "init", "-q", "-b", "secret-branch", str(outside)], check=True)
    commit(outside, "s", "secret\n", "a secret subject")
    git_dir = lay.work / ".git"
    subprocess.run(["rm", "-rf", str(git_dir)], check=True)
    if kind == "gitdir-file":
        git_dir.write_text(f"gitdir: {outside / '.git'}\n")
    else:
        git_dir.symlink_to(outside / ".git")
    st = work_status(lay.paths, lay.name)
    assert st.unknown and st.branch is None
    assert "secret" not in json.dumps(st.to_wire())


def test_alternates_do_not_reach_another_clone(tmp_path: Path) -> None:
    lay = make_layout(tmp_path / "one")
    other = make_layout(tmp_path / "two", name="b")
    secret = commit(other.work, "s", "secret\n", "the other agent's secret subject")
    alt = lay.work / ".git" / "objects" / "info" / "alternates"
    alt.write_text(f"{other.work / '.git' / 'objects'}\n")
    (lay.work / ".git" / "refs" / "heads" / "hive" / "a").write_text(f"{secret}\n")
    st = work_status(lay.paths, lay.name)
    assert "secret subject" not in json.dumps(st.to_wire())
    assert lost_work(st) is not None  # a tip the operator's repo lacks: kept, whatever git inside says


@pytest.mark.parametrize("trap", ["link-to-host", "dev-zero", "huge-sparse", "fifo", "dir", "garbage",
                                  "revision-syntax", "option", "ref-escape"])
def test_a_trapped_ref_is_unknown_and_read_no_further(lay: Layout, tmp_path: Path, trap: str) -> None:
    ref = lay.work / ".git" / "refs" / "heads" / "hive" / "a"
    host = tmp_path / "host-file"
    host.write_text(f"{lay.base}\n")  # a valid-looking id: following the link would "work"
    ref.unlink()
    if trap == "link-to-host":
        ref.symlink_to(host)
    elif trap == "dev-zero":
        ref.symlink_to("/dev/zero")
    elif trap == "huge-sparse":
        with ref.open("wb") as f:
            f.truncate(10 << 30)
    elif trap == "fifo":
        os.mkfifo(ref)
    elif trap == "dir":
        ref.mkdir()
        (ref / "x").write_text("not a ref name?")
        (lay.work / ".git" / "HEAD").write_text("ref: refs/heads/hive/a/x\n")
    elif trap == "garbage":
        ref.write_bytes(b"\xff\xfe not an id\n")
    elif trap == "revision-syntax":
        ref.write_text("HEAD@{1}\n")
    elif trap == "option":
        ref.write_text("--output=/tmp/pwned\n")
    elif trap == "ref-escape":
        ref.write_text("ref: refs/heads/../../../../etc/passwd\n")
    started = time.monotonic()
    st = work_status(lay.paths, lay.name)
    assert time.monotonic() - started < 5
    if trap == "dir":  # a ref named hive/a/x with text that is no id
        assert st.unknown
    else:
        assert st.unknown, st
    assert lost_work(st) is not None
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("trap", ["link", "huge", "malformed", "bad-name"])
def test_packed_refs_tricks(lay: Layout, tmp_path: Path, trap: str) -> None:
    packed = lay.work / ".git" / "packed-refs"
    host = tmp_path / "host-packed"
    host.write_text(f"{lay.base} refs/heads/from-the-host\n")
    if packed.exists():
        packed.unlink()
    if trap == "link":
        packed.symlink_to(host)
    elif trap == "huge":
        with packed.open("wb") as f:
            f.truncate(8 << 30)
    elif trap == "malformed":
        packed.write_text("not a packed ref\n")
    else:
        packed.write_text(f"{lay.base} refs/heads/../../x\n")
    with pytest.raises(RefsUnreadable):
        read_clone_refs(lay.work)
    st = work_status(lay.paths, lay.name)
    assert st.unknown and "from-the-host" not in json.dumps(st.to_wire())


def test_a_ref_not_owned_by_the_clones_owner_is_refused(lay: Layout) -> None:
    os.chown(lay.work, 54321, 54321)  # the agent's uid; every file in .git stays root's (a hard link, say)
    with pytest.raises(RefsUnreadable, match="not owned"):
        read_clone_refs(lay.work)
    assert work_status(lay.paths, lay.name).unknown


def test_a_slow_clone_times_out_as_unknown(lay: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "TIMEOUT", 1.5)
    (lay.work / ".gitattributes").write_text("README filter=slow\n")
    git(lay.work, "add", ".gitattributes")
    git(lay.work, "config", "filter.slow.clean", "sh -c 'sleep 60; cat'")  # after the add: it would run there
    (lay.work / "README").write_text("HELLO\n")  # the same size: status must hash it, through the filter
    started = time.monotonic()
    st = work_status(lay.paths, lay.name)
    assert time.monotonic() - started < 10
    assert st.unknown and "took more than" in (st.reason or "")


def test_a_flood_is_cut_off_as_unknown(lay: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "OUTPUT_CAP", 64)
    for i in range(20):
        (lay.work / f"untracked-{i:03}.txt").write_text("x")
    st = work_status(lay.paths, lay.name)
    assert st.unknown and "too much" in (st.reason or "")


def test_the_looking_git_has_no_network_and_no_host_view(lay: Layout, tmp_path: Path) -> None:
    """What a filter sees when it does run inside: no host paths, no interfaces but loopback."""
    report = tmp_path / "report"  # not visible inside: the filter writes its findings to stdout instead
    git(lay.work, "config", "filter.spy.clean",
        "sh -c 'ls / > /dev/null; cat /proc/net/dev | wc -l >&2; test -e " + str(lay.paths.root) + " && exit 9; cat'")
    (lay.work / ".gitattributes").write_text("README filter=spy\n")
    (lay.work / "README").write_text("HELLO\n")
    st = work_status(lay.paths, lay.name)
    assert not report.exists()
    assert st.dirty is True or st.unknown  # the spy found no state dir (exit 9 would have failed the filter)
    out = subprocess.run(probe.probe_argv(str(lay.work), ["sh", "-c", f"test -e {lay.paths.root} || echo hidden; "
                                                                     "cat /proc/net/dev"]),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("hidden")
    interfaces = [line.split(":")[0].strip() for line in out.stdout.splitlines()[3:]]
    assert interfaces == ["lo"]
