"""Issue 14, acceptance 1, with the real Claude Code CLI against the scripted
API server: a claude agent spawned with ``--repo`` runs a scripted ``Bash``
tool call (sandboxed, the default permissions: every tool inside the sandbox)
that writes a file and commits it in its workspace. After the turn the
operator's repo has ``hive/<name>`` with that commit and that file, and the
operator's own checkout is unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, passable, wait_for
from test_config_repo import plain_git
from test_workspace import make_op, snapshot

pytestmark = [
    pytest.mark.e2e,  # a daemon, a sandboxed harness and the real claude CLI
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None,
                       reason="the production case: a root daemon, agents in bwrap sandboxes"),
]


class Script:
    """The agent's model answers, in order; every other request (m1nd's) a plain one."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.replies: list[Reply] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not body.get("tools") or f"You are {self.agent}," not in json.dumps(body.get("system")):
            return Reply([text("ok")])
        with self.lock:
            return self.replies.pop(0) if self.replies else Reply([text("(script exhausted)")])


@pytest.fixture
def script() -> Script:
    return Script("coder")


@pytest.fixture
def fake(script: Script) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as f:
        yield f


def test_a_bash_commit_reaches_the_operators_repo(tmp_path: Path, fake: FakeAnthropic, script: Script) -> None:
    (tmp_path / "operator").mkdir()
    op = make_op(tmp_path / "operator")
    passable(op)
    before = snapshot(op)
    hive = Hive(tmp_path / "state", ["--driver", "claude", "--sandbox", "on"], env=fake.env()).start()
    try:
        r = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "spawn",
                            "coder", "--repo", str(op)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: hive.ls()["coder"]["parked"]["system"] >= 1, timeout=30, what="coder's harness")
        command = ("printf 'written by Bash\\n' > from-claude.txt && git add from-claude.txt && "
                   "git -c user.name=coder -c user.email=coder@hive commit -qm 'claude: add from-claude.txt' && "
                   "git rev-parse HEAD")
        script.replies += [Reply([text("committing"), tool_use("Bash", {"command": command})]),
                           Reply([text("committed")])]
        hive.admin("send", to="coder", body="commit a file, please")

        def branch() -> str | None:
            out = plain_git(op, "rev-parse", "-q", "--verify", "refs/heads/hive/coder", check=False)
            return out if out and out != before["head_commit"] else None

        commit = wait_for(branch, timeout=90, what="hive/coder in the operator's repo")
        work = hive.paths.workspace("coder")  # type: ignore[arg-type]
    finally:
        hive.stop()
    assert plain_git(op, "show", "hive/coder:from-claude.txt") == "written by Bash"
    assert plain_git(op, "log", "-1", "--format=%s", commit) == "claude: add from-claude.txt"
    assert plain_git(op, "rev-list", "--count", "main..hive/coder") == "1"
    assert (work / "from-claude.txt").read_text() == "written by Bash\n"
    assert snapshot(op) == before  # HEAD, index, work tree: byte for byte
