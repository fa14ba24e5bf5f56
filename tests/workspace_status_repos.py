"""Real git repos for the workspace-status and purge tests: an operator's repo,
an agent's clone of it at ``agents/<name>/work`` and the daemon's
``workspace.json``, laid out as spawn --repo leaves them."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hyperhive.names import AgentName
from hyperhive.paths import StatePaths

_ID = ("-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main",
       "-c", "protocol.file.allow=always")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *_ID, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class Layout:
    paths: StatePaths
    name: AgentName
    repo: Path | None
    work: Path
    base: str | None

    def pull(self) -> None:
        """What the daemon's pull does: the agent's branch into the repo as hive/<name>."""
        assert self.repo is not None
        git(self.repo, "fetch", "-q", str(self.work), f"+hive/{self.name}:refs/heads/hive/{self.name}")


def make_layout(tmp: Path, name: str = "a", with_repo: bool = True) -> Layout:
    root = tmp / "state"
    agent = AgentName(name)
    paths = StatePaths(root)
    (root / "agents" / name).mkdir(parents=True)
    (root / "applied" / name).mkdir(parents=True)
    work = paths.workspace(agent)
    repo: Path | None = None
    base: str | None = None
    if with_repo:
        repo = tmp / "operator"
        subprocess.run(["git", *_ID, "init", "-q", str(repo)], check=True)
        base = commit(repo, "README", "hello\n", "the operator's first commit")
        subprocess.run(["git", *_ID, "clone", "-q", str(repo), str(work)], check=True, capture_output=True)
        git(work, "checkout", "-q", "-b", f"hive/{name}")
    else:
        subprocess.run(["git", *_ID, "init", "-q", "-b", f"hive/{name}", str(work)], check=True)
    record = {"repo": None if repo is None else str(repo), "branch": f"hive/{name}", "base": base}
    (root / "agents" / name / "workspace.json").write_text(json.dumps(record))
    return Layout(paths, agent, repo, work, base)
