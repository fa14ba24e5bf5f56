"""Review of issue 14 (hostile agent): ``python -m hyperhive`` imports the
package from its working directory first, and that directory is the agent's.

- `hive mcp` (the CLI's MCP server, also the "ask" mode's permission prompt
  tool) is started by the claude CLI as ``python -m hyperhive mcp`` in the
  CLI's cwd: the agent's workspace. A ``hyperhive/`` package there (the
  agent's, or simply the operator's repo's own top-level ``hyperhive/``, as in
  this very repository) runs instead of the installed one: the prompt tool
  answers whatever the agent's code says (every call allowed, no question),
  and, unsandboxed, it runs as the daemon's uid on the host.
- the local backend starts an unsandboxed harness as ``python -m hyperhive
  harness`` with cwd = the agent's state dir (its HOME, written by the agent
  whenever it ran sandboxed): the same shadowing runs the agent's code as
  the daemon (root) with no sandbox.

Proposed fix: start both with ``-I`` (or ``-P``, Python 3.11+) and an absolute
entry point: hyperhive/harness/claude_cmdline.py ``mcp_config`` (line ~58:
``"args": ["-I", "-m", "hyperhive", "mcp", …]``; ``-I`` also drops PYTHON*
env vars), hyperhive/backends/local.py ``harness_argv`` (line ~51) likewise,
and run the unsandboxed harness with cwd="/" (local.py line ~215).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, text

from hyperhive.backends.local import harness_argv
from hyperhive.harness.claude_cmdline import DEFAULT_ALLOWED_TOOLS, claude_argv, claude_env, mcp_config
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths


def _shadow(where: Path, mark: Path) -> None:
    pkg = where / "hyperhive"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(f"open({str(mark)!r}, 'w').write('the agent ran')\n")


def _python_prefix(argv: list[str]) -> list[str]:
    return argv[: argv.index("hyperhive") + 1]  # the interpreter, its flags, -m hyperhive


def test_the_mcp_server_command_ignores_a_package_in_its_cwd(tmp_path: Path) -> None:
    # The pipe runs by path now (-I -S .../mcp_pipe.py): neither a hyperhive/ package nor a
    # module shadowing the standard library it imports, in the cwd, ever runs.
    mark = tmp_path / "mark"
    _shadow(tmp_path / "work", mark)
    for mod in ("json", "socket", "selectors", "os"):
        (tmp_path / "work" / f"{mod}.py").write_text(f"open({str(mark)!r}, 'w').write('the agent ran')\n")
    gone = str(tmp_path / "gone" / "run" / "hive.sock")  # no such dir: it ends at once
    server = mcp_config(gone, permission_tool=True)["mcpServers"]["hyperhive"]
    argv = [server["command"], *server["args"]]
    assert argv[1:3] == ["-I", "-S"] and Path(argv[3]).is_absolute()
    r = subprocess.run(argv, cwd=tmp_path / "work", capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert "cannot reach the daemon" in r.stderr  # it ran, as the installed pipe
    assert not mark.exists(), "the MCP pipe ran code from the workspace"


def test_the_unsandboxed_harness_command_ignores_a_package_in_the_state_dir(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "hive")
    name = AgentName("ag1")
    mark = tmp_path / "mark"
    _shadow(paths.state(name), mark)
    argv = harness_argv(paths, name, "claude", sandboxed=False)
    # LocalBackend.start runs it with cwd = the state dir when unsandboxed.
    subprocess.run([*_python_prefix(argv), "--help"], cwd=paths.state(name), capture_output=True, timeout=60)
    assert not mark.exists(), "python -m hyperhive ran the state dir's hyperhive/ package"


@pytest.mark.e2e
def test_the_claude_cli_starts_hive_mcp_from_the_workspace(tmp_path: Path) -> None:
    """The real CLI, as the claude driver runs it: its MCP server's cwd is the workspace."""
    home, work, mark = tmp_path / "state", tmp_path / "work", tmp_path / "mark"
    home.mkdir()
    _shadow(work, mark)
    cfg = tmp_path / "mcp.json"
    cfg.write_text(json.dumps(mcp_config(str(tmp_path / "hive.sock"), permission_tool=True)))
    argv = claude_argv("claude", cfg, DEFAULT_ALLOWED_TOOLS, None, None, mode="ask")
    with FakeAnthropic([Reply([text("done")])]) as fake:
        env = claude_env({**os.environ, **fake.env()}, home)
        subprocess.run(argv, input=b"hello", cwd=work, env=env, capture_output=True, timeout=120)
    assert not mark.exists(), "the CLI's hive mcp ran the workspace's hyperhive/ package"
