"""A project clone per agent, through a real root daemon and real sandboxes
(issue 14, item 1; acceptance 1 and 2 with the builtin driver's ``run``):

- ``hive spawn NAME --repo PATH``: a commit made inside the sandbox in
  ``work/`` reaches the operator's repo as ``hive/<name>`` after the turn, and
  the operator's checkout (HEAD, index, work tree) is unchanged;
- two agents on one repo: two clones, two branches, and neither can read or
  write the other's clone from inside its sandbox;
- ``hive pull NAME`` brings a commit made while the agent is stopped;
- the operator's repository is not visible inside the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, passable, wait_for
from test_config_repo import PLAIN_ENV, plain_git
from test_sandbox import run_cmd
from test_workspace import make_op, snapshot

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the production case: a root daemon"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (.ci/run installs it)"),
]

AGENTS = ("alice", "bob")


def cli(hive: Hive, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_op(tmp_path_factory.mktemp("operator"))
    passable(repo)
    return repo


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, op: Path) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("ws") / "state", extra_args=["--sandbox", "on"]).start()
    try:
        h.admin("stop", name="m1nd")
        for name in AGENTS:
            r = cli(h, "spawn", name, "--repo", str(op))
            assert r.returncode == 0, r.stderr
            wait_for(lambda n=name: h.ls()[n]["parked"]["system"] >= 1, timeout=30, what=f"{name}'s harness")
        yield h
    finally:
        h.stop()


def commit_inside(hive: Hive, agent: str, fname: str, text: str) -> str:
    """A file written and committed by the agent's own shell, inside its sandbox, in its workspace."""
    work = hive.paths.workspace(agent)  # type: ignore[arg-type]
    status, out = run_cmd(hive, agent, f"cd {work} && printf '{text}' > {fname} && git add {fname} && "
                          f"git -c user.name={agent} -c user.email={agent}@hive commit -qm 'add {fname}' && "
                          "git rev-parse HEAD")
    assert status.startswith("exit 0"), (status, out)
    return out.strip().splitlines()[-1]


def test_a_commit_inside_reaches_the_operators_repo(hive: Hive, op: Path) -> None:
    before = snapshot(op)
    commits = {a: commit_inside(hive, a, f"{a}.txt", f"work of {a}\\n") for a in AGENTS}

    def pulled() -> bool:
        return all(plain_git(op, "rev-parse", "-q", "--verify", f"refs/heads/hive/{a}", check=False) == c
                   for a, c in commits.items())

    wait_for(pulled, timeout=30, what="both branches in the operator's repo")
    for a in AGENTS:
        assert plain_git(op, "show", f"hive/{a}:{a}.txt") == f"work of {a}"
        assert plain_git(op, "rev-list", "--count", f"main..hive/{a}") == "1"
    assert snapshot(op) == before
    rec = json.loads((hive.paths.agent("alice") / "workspace.json").read_text())  # type: ignore[arg-type]
    assert rec == {"repo": str(op.resolve()), "branch": "hive/alice", "base": plain_git(op, "rev-parse", "main")}


def test_neither_reads_nor_writes_the_others_clone(hive: Hive, op: Path) -> None:
    bob = hive.paths.workspace("bob")  # type: ignore[arg-type]
    status, out = run_cmd(hive, "alice", f"ls {bob} 2>&1; echo x > {bob}/planted 2>&1; cat {bob}/README 2>&1; "
                          f"ls {op} 2>&1; ls {op}/.git 2>&1; true")
    assert not (bob / "planted").exists()
    assert "the operator's project" not in out
    # Not even there: neither bob's clone nor the operator's repo (nor its .git) is in alice's view.
    for path in (bob, bob / "planted", bob / "README", op, op / ".git"):
        assert f"{path}: No such file or directory" in out or f"{path}': No such file or directory" in out \
            or f"create {path}: Directory nonexistent" in out, (path, out)


def test_hive_pull_works_for_a_stopped_agent(hive: Hive, op: Path) -> None:
    hive.admin("stop", name="alice")
    work = hive.paths.workspace("alice")  # type: ignore[arg-type]
    uid = int((hive.paths.agent("alice") / "uid").read_text())  # type: ignore[arg-type]
    as_alice: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []}
    subprocess.run(["git", "-C", str(work), "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q",
                    "--allow-empty", "-m", "while stopped"], check=True, env=PLAIN_ENV, timeout=30, **as_alice)
    head = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True, env=PLAIN_ENV, timeout=30, **as_alice).stdout.strip()
    before = snapshot(op)
    r = cli(hive, "pull", "alice", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "alice", "branch": "hive/alice", "commit": head, "ahead": 2}
    assert plain_git(op, "rev-parse", "hive/alice") == head
    assert snapshot(op) == before
    r = cli(hive, "pull", "alice")
    assert r.returncode == 0 and "hive/alice at " + head[:12] in r.stdout and "2 ahead" in r.stdout
    r = cli(hive, "pull", "nobody")
    assert r.returncode != 0 and "no workspace" in r.stderr


def test_spawn_with_a_bad_repo_changes_nothing(hive: Hive, tmp_path: Path) -> None:
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    for bad in (str(plain), str(hive.paths.workspace("bob"))):  # type: ignore[arg-type]
        r = cli(hive, "spawn", "carol", "--repo", bad)
        assert r.returncode != 0 and ("not a git work tree" in r.stderr or "inside the state dir" in r.stderr)
    assert "carol" not in hive.ls()
    assert not hive.paths.agent("carol").exists()  # type: ignore[arg-type]


def test_request_spawn_with_a_repo_clones_when_approved(hive: Hive, op: Path) -> None:
    aid = hive.admin("request_spawn", name="dave", repo=str(op))["approval_id"]
    shown = next(a for a in hive.admin("approvals")["pending"] if a["id"] == aid)
    assert shown["config"]["repo"] == str(op)  # the operator sees which repository before approving
    hive.admin("approve", approval_id=aid)
    wait_for(lambda: "dave" in hive.ls(), timeout=60, what="dave spawned")
    rec = json.loads((hive.paths.agent("dave") / "workspace.json").read_text())  # type: ignore[arg-type]
    assert rec["repo"] == str(op.resolve()) and rec["branch"] == "hive/dave"
    assert (hive.paths.workspace("dave") / "src.txt").read_text() == "code\n"  # type: ignore[arg-type]
