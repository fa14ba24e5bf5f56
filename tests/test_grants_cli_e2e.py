"""Issue 14 through a real daemon and the `hive` CLI: `hive grants NAME` lists
the tools an agent was granted "from now on", `hive revoke-tool NAME TOOL`
takes one back (the admin socket's ``grants{name}`` and ``revoke_tool{name,
tool}`` ops, over `web/operator/permissions`), and `hive request-spawn
--repo PATH` queues a spawn whose config names the repo as an absolute path.

The grant is made the way an agent's CLI makes one: a ``permission`` request
on the agent's own socket, answered "allow Bash from now on" with `hive answer`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from support import Hive, wait_for
from workspace_status_repos import commit

from hyperhive import client
from hyperhive.errors import BadRequest

pytestmark = pytest.mark.e2e


def cli(hive: Hive, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=90, check=check, cwd=cwd)


@pytest.fixture
def quiet(tmp_path: Path) -> Any:
    """A daemon (unsandboxed: quicker) with agent ``alice`` whose harness is stopped:
    its socket is open, and the only client asking permissions is this test."""
    h = Hive(tmp_path / "state", ["--sandbox", "off"]).start()
    try:
        h.spawn("alice")
        h.admin("stop", name="alice")
        yield h
    finally:
        h.stop()


def ask_permission(hive: Hive, tool: str, command: str) -> tuple[threading.Thread, dict[str, Any]]:
    """A ``permission`` request on alice's socket, parked in a thread until the operator decides."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["reply"] = client.request(hive.socket("alice"), "permission", timeout=60, tool_name=tool,
                                          input_json=json.dumps({"command": command}), tool_use_id="toolu_cli")
        except Exception as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def grant_bash(hive: Hive) -> None:
    t, out = ask_permission(hive, "Bash", "touch /tmp/x")
    [q] = wait_for(lambda: hive.admin("questions")["pending"], timeout=15, what="the permission question")
    assert "allow Bash from now on" in q["options"]
    r = cli(hive, "answer", str(q["id"]), "--choose", "allow Bash from now on")
    assert r.returncode == 0, r.stderr
    t.join(30)
    assert out["reply"]["decision"]["behavior"] == "allow", out


def test_grants_lists_and_revoke_tool_takes_back(quiet: Hive) -> None:
    hive = quiet
    assert cli(hive, "grants", "alice").stdout.strip() == "alice: (no tools granted)"
    grant_bash(hive)
    assert cli(hive, "grants", "alice").stdout.strip() == "alice: Bash"
    assert json.loads(cli(hive, "grants", "alice", "--json").stdout) == {"agent": "alice", "tools": ["Bash"]}
    # The agent's own socket still answers its own grants, with no name.
    own = client.request(hive.socket("alice"), "grants", timeout=30)
    assert own["tools"] == ["Bash"] and own["agent"] == "alice"

    # Granted: the next Bash call is allowed with no question.
    t, out = ask_permission(hive, "Bash", "ls")
    t.join(30)
    assert out["reply"]["decision"]["behavior"] == "allow" and out["reply"]["question_id"] is None

    r = cli(hive, "revoke-tool", "alice", "Bash")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alice: Bash revoked (granted: none)"
    assert cli(hive, "grants", "alice").stdout.strip() == "alice: (no tools granted)"
    assert not json.loads((hive.paths.agent("alice") / "granted-tools.json").read_text())  # type: ignore[arg-type]
    again = cli(hive, "revoke-tool", "alice", "Bash")
    assert again.stdout.strip() == "alice: Bash was not granted (granted: none)"

    # Revoked: the next Bash call asks the operator again.
    t, out = ask_permission(hive, "Bash", "ls")
    [q] = wait_for(lambda: hive.admin("questions")["pending"], timeout=15, what="a question again")
    cli(hive, "answer", str(q["id"]), "--choose", "deny")
    t.join(30)
    assert out["reply"]["decision"]["behavior"] == "deny"


@pytest.mark.parametrize(("args", "needle"), [
    (("grants", "../alice"), "bad_name"),
    (("grants", "Alice Smith"), "bad_name"),
    (("revoke-tool", "../alice", "Bash"), "bad_name"),
    (("revoke-tool", "alice", "Bash,Edit"), "bad_request"),
    (("revoke-tool", "alice", ""), "bad_request"),
    (("revoke-tool", "alice", "Ba\x01sh"), "bad_request"),
])
def test_bad_input_is_refused_and_changes_nothing(quiet: Hive, args: tuple[str, ...], needle: str) -> None:
    hive = quiet
    grant_bash(hive)
    r = cli(hive, *args, check=False)
    assert r.returncode == 2 and f"hive: {needle}:" in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert hive.admin("grants", name="alice")["tools"] == ["Bash"]


def test_admin_grants_needs_a_name_and_the_ops_take_nothing_else(quiet: Hive) -> None:
    hive = quiet
    with pytest.raises(BadRequest, match="needs the agent's name"):
        hive.admin("grants")
    with pytest.raises(BadRequest, match="does not take"):
        hive.admin("revoke_tool", name="alice", tool="Bash", agent="m1nd")
    with pytest.raises(BadRequest, match="needs field 'tool'"):
        hive.admin("revoke_tool", name="alice")


def test_request_spawn_repo_is_made_absolute(hive: Hive, tmp_path: Path) -> None:
    repo = tmp_path / "project"
    subprocess.run(["git", "-c", "init.defaultBranch=main", "init", "-q", str(repo)], check=True)
    commit(repo, "README", "the project\n", "the operator's commit")
    r = cli(hive, "request-spawn", "cloner", "--repo", "project", cwd=tmp_path)  # relative to the CLI's cwd
    assert r.returncode == 0, r.stderr
    aid = int(r.stdout.split("#")[1].split()[0])
    [a] = [a for a in json.loads(cli(hive, "approvals", "--json").stdout)["pending"] if a["id"] == aid]
    assert a["config"]["repo"] == str(repo)
    cli(hive, "approve", str(aid))

    def workspace() -> dict[str, Any] | None:
        rows = {c["name"]: c for c in hive.admin("ls")["containers"]}
        ws = rows.get("cloner", {}).get("workspace")
        return ws if isinstance(ws, dict) else None

    ws = wait_for(workspace, timeout=60, what="cloner's clone")
    assert ws["branch"] == "hive/cloner"
    assert (hive.paths.workspace("cloner") / "README").read_text() == "the project\n"  # type: ignore[arg-type]
