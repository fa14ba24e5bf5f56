"""Issue 14, acceptance 5, through a real daemon and the `hive` CLI: `hive ls`
shows an agent's clone (branch, ahead, dirty); a purge of an agent whose
clone has a commit the operator's repo lacks is refused and names it;
`--force` purges; once pulled, the work is kept and a purge goes through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import DashSession, Hive, wait_for
from workspace_status_repos import commit, git

pytestmark = pytest.mark.e2e


def cli(hive: Hive, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=90, check=check)


def operator_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    subprocess.run(["git", "-c", "init.defaultBranch=main", "init", "-q", str(repo)], check=True)
    commit(repo, "README", "the project\n", "the operator's commit")
    return repo


def as_owner(work: Path, *args: str) -> str:
    """git in the clone as its owner (the agent's uid), as the agent would run it."""
    st = os.lstat(work)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(work), "-c", "user.name=agent", "-c", "user.email=agent@hive", *args],
                          check=True, capture_output=True, text=True, env=env, user=st.st_uid, group=st.st_gid,
                          extra_groups=[]).stdout.strip()


def agent_commit(work: Path, name: str, message: str) -> str:
    st = os.lstat(work)
    f = work / name
    f.write_text(f"{message}\n")
    os.chown(f, st.st_uid, st.st_gid)
    as_owner(work, "add", name)
    as_owner(work, "commit", "-q", "-m", message)
    return as_owner(work, "rev-parse", "HEAD")


def workspace_of(hive: Hive, name: str) -> dict[str, object]:
    rows = {c["name"]: c for c in json.loads(cli(hive, "ls", "--json").stdout)}
    ws = rows[name].get("workspace")
    assert isinstance(ws, dict), rows[name]
    return ws


def test_purge_refuses_unpulled_work_names_it_and_force_purges(hive: Hive, tmp_path: Path) -> None:
    repo = operator_repo(tmp_path)
    hive.spawn("w", repo=str(repo))
    work = hive.paths.workspace("w")  # type: ignore[arg-type]
    ws = workspace_of(hive, "w")
    assert (ws["branch"], ws["ahead"], ws["dirty"], ws["lost"]) == ("hive/w", 0, False, None)
    assert "hive/w" in cli(hive, "ls").stdout

    cli(hive, "stop", "w")  # no turn (and so no pull) from here on
    oid = agent_commit(work, "result.txt", "the agent's unpulled result")
    (work / "draft.txt").write_text("uncommitted\n")
    wait_for(lambda: workspace_of(hive, "w")["unpulled"] == 1, timeout=30, what="ls to show the new commit")
    ws = workspace_of(hive, "w")
    assert (ws["ahead"], ws["dirty"], ws["dirty_files"]) == (1, True, 1)
    assert "hive/w +1 * ^1" in cli(hive, "ls").stdout

    cli(hive, "destroy", "w")  # a tombstone: its clone is kept
    refused = cli(hive, "purge", "w", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert oid[:12] in said and "the agent's unpulled result" in said and "1 file" in said and "--force" in said
    assert (work / "result.txt").exists() and hive.paths.agent("w").exists()  # type: ignore[arg-type]

    forced = cli(hive, "purge", "w", "--force", check=False)
    assert forced.returncode == 0, forced.stderr
    assert "purged" in forced.stdout
    assert not hive.paths.agent("w").exists()  # type: ignore[arg-type]
    assert git(repo, "status", "--porcelain") == ""  # the operator's checkout untouched


def test_destroy_purge_refuses_too_and_pulled_work_purges(hive: Hive, tmp_path: Path) -> None:
    repo = operator_repo(tmp_path)
    hive.spawn("v", repo=str(repo))
    work = hive.paths.workspace("v")  # type: ignore[arg-type]
    cli(hive, "stop", "v")
    oid = agent_commit(work, "v.txt", "v's work")
    refused = cli(hive, "destroy", "v", "--purge", check=False)
    assert refused.returncode != 0 and oid[:12] in refused.stdout + refused.stderr
    assert (work / "v.txt").exists()

    cli(hive, "destroy", "v", check=False)  # (a tombstone now, whichever way the refusal left it)
    cli(hive, "pull", "v")
    assert git(repo, "rev-parse", "refs/heads/hive/v") == oid
    cli(hive, "purge", "v")  # the work lives on in the operator's repo: nothing to lose
    assert not hive.paths.agent("v").exists()  # type: ignore[arg-type]
    assert git(repo, "rev-parse", "refs/heads/hive/v") == oid


def test_the_dashboard_shows_the_clone_and_its_purge_needs_force(hive: Hive, tmp_path: Path) -> None:
    repo = operator_repo(tmp_path)
    hive.spawn("d", repo=str(repo))
    work = hive.paths.workspace("d")  # type: ignore[arg-type]
    dash = DashSession(hive)

    def row() -> dict[str, object]:
        status, body = dash.get("/api/state")
        assert status == 200
        [c] = [c for c in json.loads(body)["state"]["containers"] if c["name"] == "d"]
        return c  # type: ignore[no-any-return]

    c = wait_for(lambda: row() if row().get("workspace_text") else None, timeout=30, what="d's workspace on its row")
    assert c["workspace_text"] == "hive/d"
    cli(hive, "stop", "d")
    oid = agent_commit(work, "d.txt", "d's unpulled work")
    cli(hive, "destroy", "d")

    def tomb() -> dict[str, object] | None:
        status, body = dash.get("/api/state")
        found = [t for t in json.loads(body)["state"]["tombstones"] if t["name"] == "d"]
        return found[0] if found and found[0].get("lost") else None

    t = wait_for(tomb, timeout=30, what="the kept state row to say what a purge would lose")
    assert oid[:12] in str(t["lost"]) and t["workspace_text"] == "hive/d +1 ^1"
    status, body = dash.post("/purge-tombstone/d")
    assert status == 409 and oid[:12] in json.loads(body)["error"]["message"]
    assert hive.paths.agent("d").exists()  # type: ignore[arg-type]
    status, body = dash.post("/purge-tombstone/d", {"force": "1"})
    assert status == 200, body
    assert not hive.paths.agent("d").exists()  # type: ignore[arg-type]
