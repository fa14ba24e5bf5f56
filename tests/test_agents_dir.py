"""``--agents-dir`` (issue 16), without a daemon: `StatePaths` with and without an
agents root, the start's checks (`hyperhive.agents_dir`) on real dirs, the
harness's applied config found through ``--applied-dir``, and the parts that
look below the agents dir (purge, the repo check) with it elsewhere. A daemon
on a tmpfs of its own: tests/test_agents_dir_e2e.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hyperhive import cli, daemon, settings
from hyperhive.agents_dir import MARKER, OWNER_MARKER, holds_agents, prepare, state_paths
from hyperhive.backends.local import harness_argv
from hyperhive.errors import BadRequest, BadSetting, StartupError
from hyperhive.harness.loop import agent_config
from hyperhive.logs import terminal_safe
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.tombstones import list_tombstones, purge
from hyperhive.workspace import check_repo

A = AgentName("a")


# --- StatePaths ------------------------------------------------------------------------------
def test_state_paths_default_to_agents_under_the_state_dir(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "s")
    assert p.agents == tmp_path / "s" / "agents"
    assert p.state(A) == tmp_path / "s" / "agents" / "a" / "state"
    assert p.socket(A) == tmp_path / "s" / "agents" / "a" / "run" / "hive.sock"


def test_an_agents_root_moves_every_agent_path_and_nothing_else(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "s", agents_root=tmp_path / "fs")
    assert p.agents == tmp_path / "fs"
    for got, leaf in ((p.agent(A), ""), (p.state(A), "state"), (p.workspace(A), "work"), (p.run(A), "run"),
                      (p.socket(A), "run/hive.sock"), (p.api_socket(A), "run/api.sock"),
                      (p.web_socket(A), "state/web.sock"), (p.harness_log(A), "harness.log"),
                      (p.config_dir(A), "config")):
        assert got == (tmp_path / "fs" / "a" / leaf if leaf else tmp_path / "fs" / "a")
    assert (p.db, p.admin_socket, p.applied(A)) == (
        tmp_path / "s" / "hive.sqlite", tmp_path / "s" / "run" / "admin.sock", tmp_path / "s" / "applied" / "a")
    p.create_agent(A, AgentConfig(driver="builtin"))
    assert (tmp_path / "fs" / "a" / "config" / "agent.json").is_file() and (p.applied(A) / "agent.json").is_file()
    assert not (tmp_path / "s" / "agents").exists()


# --- the setting's checks as a path ------------------------------------------------------------
def test_empty_or_the_default_spelt_out_is_the_default(tmp_path: Path) -> None:
    assert state_paths(tmp_path / "s", "").agents_root is None
    assert state_paths(tmp_path / "s", str(tmp_path / "s" / "agents")).agents_root is None
    assert state_paths(tmp_path / "s", str(tmp_path / "fs")).agents == tmp_path / "fs"


@pytest.mark.parametrize(("given", "needle"), [
    ("agents", "must be an absolute path, got 'agents'"),
    ("./x", "must be an absolute path"),
    ("{t}/fs/../s/x", "no '..'"),
    ("{t}/s", "is inside the state dir"),
    ("{t}/s/applied", "is inside the state dir"),
    ("{t}/s/agents/a", "is inside the state dir"),
    ("{t}", "holds the state dir"),
])
def test_a_path_that_cannot_be_the_agents_dir_is_refused(tmp_path: Path, given: str, needle: str) -> None:
    with pytest.raises(BadSetting, match=needle.replace("(", r"\(").replace(".", r"\.")):
        state_paths(tmp_path / "s", given.format(t=tmp_path))


# --- prepare: made, recorded, compared ---------------------------------------------------------
def _custom(tmp_path: Path, name: str = "fs") -> StatePaths:
    p = state_paths(tmp_path / "s", str(tmp_path / name))
    p.root.mkdir(exist_ok=True)
    return p


def test_a_missing_agents_dir_is_made_0711_and_recorded(tmp_path: Path) -> None:
    p = _custom(tmp_path, "deep/fs")
    prepare(p)
    assert (os.stat(p.agents).st_mode & 0o777, os.stat(p.agents).st_uid) == (0o711, os.geteuid())
    assert (p.root / MARKER).read_text() == f"{p.agents}\n"
    assert (p.agents / OWNER_MARKER).read_text() == f"{p.root.resolve()}\n"
    prepare(p)  # the next start: the same place, nothing to say
    d = StatePaths(tmp_path / "s2")
    d.root.mkdir()
    prepare(d)
    assert (d.root / MARKER).read_text() == "agents\n" and not (d.agents / OWNER_MARKER).exists()
    assert os.stat(d.agents).st_mode & 0o777 == 0o711


def test_an_existing_agents_dir_is_made_0711(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    p.agents.mkdir(mode=0o755)
    prepare(p)
    assert os.stat(p.agents).st_mode & 0o777 == 0o711


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_symlink_or_a_file_is_refused(tmp_path: Path, kind: str) -> None:
    p = _custom(tmp_path)
    (tmp_path / "real").mkdir()
    if kind == "symlink":
        p.agents.symlink_to(tmp_path / "real")
    else:
        p.agents.write_text("")
    with pytest.raises(BadSetting, match="is a symlink" if kind == "symlink" else "is not a directory"):
        prepare(p)
    assert not (p.root / MARKER).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another uid needs root")
def test_a_dir_of_another_uid_is_refused(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    p.agents.mkdir()
    os.chown(p.agents, 12345, 12345)
    with pytest.raises(BadSetting, match="belongs to uid 12345"):
        prepare(p)


def test_the_default_symlinked_elsewhere_is_refused(tmp_path: Path) -> None:
    d = StatePaths(tmp_path / "s")
    d.root.mkdir()
    (tmp_path / "real").mkdir()
    d.agents.symlink_to(tmp_path / "real")
    with pytest.raises(BadSetting, match=f"give the dir it points to \\({tmp_path / 'real'}\\)"):
        prepare(d)


def _with_agent(p: StatePaths) -> None:
    prepare(p)
    p.create_agent(A, AgentConfig())


def test_moving_away_from_where_the_agents_are_is_refused_naming_it(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    _with_agent(p)
    other = _custom(tmp_path, "other")
    with pytest.raises(BadSetting) as exc:
        prepare(other)
    assert exc.value.message == (f"the agents are in {p.agents}, not {other.agents}: start with --agents-dir "
                                 f"{p.agents} (or move them there, then remove {p.root / MARKER})")
    assert not other.agents.exists()  # refused before anything was made
    with pytest.raises(BadSetting, match=f"the agents are in {p.agents}, not {p.root / 'agents'}"):
        prepare(StatePaths(p.root))
    prepare(p)  # back where they are: fine


def test_a_move_as_the_refusal_says_is_taken(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    _with_agent(p)
    other = _custom(tmp_path, "other")
    p.agents.rename(other.agents)  # moved whole (its .hive-state too)
    (p.root / MARKER).unlink()
    prepare(other)
    assert (other.root / MARKER).read_text() == f"{other.agents}\n" and other.state(A).is_dir()


def test_leaving_the_default_with_agents_in_it_is_refused(tmp_path: Path) -> None:
    d = StatePaths(tmp_path / "s")
    d.root.mkdir()
    _with_agent(d)
    with pytest.raises(BadSetting, match="the agents are in .*/s/agents, not .*: start with no --agents-dir"):
        prepare(_custom(tmp_path))
    (d.root / MARKER).unlink()  # a state dir from before the marker: the agents are found all the same
    with pytest.raises(BadSetting, match="start with no --agents-dir"):
        prepare(_custom(tmp_path))


def test_moving_when_no_agent_is_left_behind_is_allowed(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    prepare(p)  # recorded, but no agent ever made there
    other = _custom(tmp_path, "other")
    prepare(other)
    assert (p.root / MARKER).read_text() == f"{other.agents}\n"


def test_an_unmounted_agents_dir_is_refused(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    _with_agent(p)
    for entry in (*p.agents.iterdir(),):  # what an empty mount point looks like
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    with pytest.raises(BadSetting, match=f"has no {OWNER_MARKER}, yet this hive's agents were there: is its "
                                         "filesystem mounted"):
        prepare(p)


def test_another_hives_agents_dir_is_refused(tmp_path: Path) -> None:
    p = _custom(tmp_path)
    prepare(p)
    theirs = state_paths(tmp_path / "t", str(p.agents))
    theirs.root.mkdir()
    with pytest.raises(BadSetting, match=f"holds the agents of the hive whose state dir is {p.root.resolve()}"):
        prepare(theirs)


def test_holds_agents_looks_for_an_agents_dir_only(tmp_path: Path) -> None:
    assert not holds_agents(tmp_path / "missing")
    (tmp_path / "lost+found").mkdir()
    (tmp_path / OWNER_MARKER).write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "lost+found")
    assert not holds_agents(tmp_path)
    (tmp_path / "a").mkdir()
    assert holds_agents(tmp_path)


# --- the daemon refuses it in one line ------------------------------------------------------
async def _refusal(state: Path, *args: str) -> str:
    """What `hive serve` says when its start refuses the setting: the command line parsed
    as `hive serve` parses it, the daemon's own start (`daemon.start`, what `hive serve`
    awaits first), and its `StartupError` as the CLI prints it. That such an error leaves
    `hive serve` as that one line on stderr and exit status 1 is proven end to end on a
    real `hive serve` (tests/test_startup_errors.py; --agents-dir's own refusals in
    tests/test_agents_dir_e2e.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERHIVE_")}
    ns = cli._parser().parse_args(["serve", "--state-dir", str(state), "--listen", "127.0.0.1:0", *args])
    with pytest.raises(StartupError) as exc:
        await daemon.start(settings.from_args(settings.fill_globals(ns, env), env))
    [line] = terminal_safe(f"hive: {exc.value.message}").splitlines()
    return line


async def test_serve_refuses_a_relative_agents_dir_before_making_anything(tmp_path: Path) -> None:
    line = await _refusal(tmp_path / "s", "--agents-dir", "fs")
    assert line == "hive: agents_dir must be an absolute path, got 'fs'"
    assert not (tmp_path / "s").exists()


async def test_serve_refuses_a_symlinked_agents_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "fs").symlink_to(tmp_path / "real")
    line = await _refusal(tmp_path / "s", "--agents-dir", str(tmp_path / "fs"))
    assert line == f"hive: agents_dir {tmp_path / 'fs'} is a symlink: give the dir it points to ({tmp_path / 'real'})"
    assert not (tmp_path / "s" / "hive.sqlite").exists()


# --- what looks below the agents dir, with it elsewhere -------------------------------------------
def test_the_harness_reads_the_applied_dir_it_is_given(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "s", agents_root=tmp_path / "fs")
    p.create_agent(A, AgentConfig(driver="claude", allowed_tools=("Read",)))
    argv = harness_argv(p, A, "claude", sandboxed=True)
    assert argv[argv.index("--applied-dir") + 1] == str(p.applied(A))
    assert agent_config("a", p.state(A), p.applied(A)).allowed_tools == ("Read",)
    assert agent_config("a", p.state(A)) == AgentConfig()  # the old derivation cannot find it from there
    assert agent_config("a", p.state(A), tmp_path / "none") == AgentConfig()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "agent.json").write_text("{")
    assert agent_config("a", p.state(A), tmp_path / "bad") == AgentConfig()


def test_tombstones_and_purge_work_in_an_agents_dir_elsewhere(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "s", agents_root=tmp_path / "fs")
    p.root.mkdir()
    prepare(p)
    p.create_agent(A, AgentConfig())
    p.create_agent(AgentName("live"), AgentConfig())
    assert [t.name for t in list_tombstones(p, {"live"}, now=0)] == ["a"]
    assert purge(p, "a", {"live"}) == [p.agent(A).resolve(), p.applied(A).resolve()]
    assert not p.agent(A).exists() and (p.agents / OWNER_MARKER).exists()
    (p.agents / "evil").symlink_to(p.root)
    with pytest.raises(Exception, match="symlink"):
        purge(p, "evil", set())
    assert (p.root / MARKER).exists()


def test_a_repo_inside_the_agents_dir_is_refused(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "s", agents_root=tmp_path / "fs")
    p.create_agent(A, AgentConfig())
    work = p.workspace(A)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    with pytest.raises(BadRequest, match="inside the agents dir"):
        check_repo(p, str(work))

