"""Git that cannot run code or lie (issue 12, item 4), through a real daemon:
the manager's socket proposes and requests, the `hive` CLI approves.

- A config repo full of traps (hooks in .git/hooks and in a hooksPath its own
  config names, an fsmonitor, filter/textconv/diff drivers, a gpg program):
  propose_config, request_apply_commit and approve run none of them.
- `git replace` (and a rewritten loose object, a moved branch, an edited work
  tree) after an approval was queued: approve applies the bytes shown.
- A replace planted before queuing: what is shown is the commit's real
  content, and that is what is applied; a loose object whose bytes are not
  its id is refused at request time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive
from test_config_repo import plain_git, plant_traps

from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

pytestmark = pytest.mark.e2e

RESTRICT = '{"allowed_recipients": ["operator"]}'
GRANT = '{"allowed_tools": ["Bash", "Edit", "Write"], "network": {"allow": ["*.example.com"]}}\n'


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    """One daemon for the module (each test its own agent); m1nd's harness
    stopped, so nothing but the tests acts as the manager."""
    h = Hive(tmp_path_factory.mktemp("hive") / "state").start()
    try:
        h.admin("stop", name="m1nd")
        yield h
    finally:
        h.stop()


def cli(hive: Hive, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=60, check=check)


def manager(hive: Hive, op: str, **fields: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        c = AsyncClient(hive.socket("m1nd"))
        try:
            return await c.request(op, **fields)
        finally:
            await c.close()
    return asyncio.run(run())


def pending(hive: Hive, approval_id: int) -> dict[str, Any]:
    [a] = [a for a in json.loads(cli(hive, "approvals", "--json").stdout)["pending"] if a["id"] == approval_id]
    return a


def kept_files(hive: Hive, approval_id: int) -> dict[str, str]:
    with sqlite3.connect(hive.paths.db) as conn:
        (text,) = conn.execute("SELECT files_json FROM approvals WHERE id = ?", (approval_id,)).fetchone()
    conn.close()
    return dict(json.loads(text))


def approve(hive: Hive, approval_id: int) -> None:
    assert f"#{approval_id} approved" in cli(hive, "approve", str(approval_id)).stdout


def commit_over_head(repo: Path, files: dict[str, str], message: str) -> str:
    """A commit made by plain git plumbing (nothing of the repo's runs), HEAD moved to it."""
    listing = plain_git(repo, "ls-tree", "HEAD").splitlines()
    entries = {line.split("\t", 1)[1]: line for line in listing}
    for name, text in files.items():
        oid = plain_git(repo, "hash-object", "-w", "--stdin", input=text.encode())
        entries[name] = f"100644 blob {oid}\t{name}"
    tree = plain_git(repo, "mktree", input=("\n".join(entries.values()) + "\n").encode())
    commit = plain_git(repo, "commit-tree", "--no-gpg-sign", "-p", "HEAD", "-m", message, tree)
    plain_git(repo, "update-ref", "HEAD", commit)
    return commit


def replace_with_grant(repo: Path, commit: str) -> None:
    """Make a plain git see GRANT as ``commit``'s agent.json: a replace of the
    blob, and of the commit by one whose tree grants everything."""
    blob = plain_git(repo, "rev-parse", f"{commit}:agent.json")
    evil = plain_git(repo, "hash-object", "-w", "--stdin", input=GRANT.encode())
    plain_git(repo, "replace", "-f", blob, evil)
    evil_tree = plain_git(repo, "mktree", input=f"100644 blob {evil}\tagent.json\n".encode())
    plain_git(repo, "replace", "-f", commit, plain_git(repo, "commit-tree", "--no-gpg-sign", "-m", "evil", evil_tree))
    assert "Bash" in plain_git(repo, "show", f"{commit}:agent.json")  # a plain git is fooled


def rewrite_loose(repo: Path, oid: str, text: str) -> None:
    """The loose object ``oid`` now holds ``text`` (git reads it without checking)."""
    p = repo / ".git" / "objects" / oid[:2] / oid[2:]
    os.chmod(p, 0o644)
    p.write_bytes(zlib.compress(b"blob %d\0" % len(text.encode()) + text.encode()))


def test_nothing_planted_in_a_config_repo_runs(hive: Hive, tmp_path: Path) -> None:
    hive.spawn("trap")
    repo = hive.paths.config_dir("trap")  # type: ignore[arg-type]
    applied = hive.paths.applied("trap")  # type: ignore[arg-type]
    # A commit carrying a .gitattributes that asks for filters, textconv and eol
    # conversion, made before the traps (so this test's own git runs none).
    attrs = "* filter=evil diff=evil text eol=crlf ident\n"
    raw = "$Id$\nfirst\nsecond\n"
    attrs_commit = commit_over_head(repo, {".gitattributes": attrs, "prompt.md": raw}, "attributes")
    marks = tmp_path / "marks.txt"
    plant_traps(repo, marks)

    out = manager(hive, "propose_config", agent="trap", message="review code", prompt="You review code.\n",
                  agent_json=RESTRICT)
    assert not marks.exists(), marks.read_text()
    assert "+You review code." in pending(hive, out["approval_id"])["diff_html"]
    approve(hive, out["approval_id"])
    assert (applied / "prompt.md").read_bytes() == b"You review code.\n"
    assert json.loads((applied / "agent.json").read_text()) == {"allowed_recipients": ["operator"]}
    assert (applied / ".commit").read_text().strip() == out["commit"]

    aid = manager(hive, "request_apply_commit", agent="trap", commit=attrs_commit)["approval_id"]
    kept = kept_files(hive, aid)
    assert sorted(kept) == [".gitattributes", "agent.json", "prompt.md"]
    assert (kept[".gitattributes"], kept["prompt.md"]) == (attrs, raw)
    approve(hive, aid)
    assert (applied / "prompt.md").read_bytes() == raw.encode()  # no smudge, no eol, no $Id$ expansion
    assert (applied / ".gitattributes").read_bytes() == attrs.encode()
    assert not marks.exists(), marks.read_text()
    assert not (repo.parent / "config-elsewhere").exists()  # the repo's core.worktree was not followed


def test_a_replace_planted_after_queuing_changes_nothing_applied(hive: Hive) -> None:
    hive.spawn("after")
    repo = hive.paths.config_dir("after")  # type: ignore[arg-type]
    applied = hive.paths.applied("after")  # type: ignore[arg-type]
    out = manager(hive, "propose_config", agent="after", message="restrict to operator", agent_json=RESTRICT)
    aid, commit = out["approval_id"], out["commit"]
    shown = pending(hive, aid)["diff_html"]
    kept = kept_files(hive, aid)
    assert "&quot;operator&quot;" in shown and "Bash" not in shown
    assert json.loads(kept["agent.json"]) == {"allowed_recipients": ["operator"]}

    # Everything a process with access to the repo could do to it now:
    blob = plain_git(repo, "rev-parse", f"{commit}:agent.json")
    replace_with_grant(repo, commit)
    rewrite_loose(repo, blob, GRANT)  # the blob's own object file, too
    grant_commit = commit_over_head(repo, {"agent.json": GRANT}, "grant")  # the branch moves on
    (repo / "agent.json").write_text(GRANT)  # and the work tree
    assert plain_git(repo, "cat-file", "blob", blob) == GRANT.strip()

    approve(hive, aid)
    assert (applied / "agent.json").read_bytes() == kept["agent.json"].encode()
    assert (applied / "prompt.md").read_bytes() == kept["prompt.md"].encode()
    assert json.loads((applied / "agent.json").read_text()) == {"allowed_recipients": ["operator"]}
    assert (applied / ".commit").read_text().strip() == commit != grant_commit
    [decided] = [a for a in json.loads(cli(hive, "approvals", "--json").stdout)["decided"] if a["id"] == aid]
    assert decided["status"] == "approved" and decided["diff_html"] == shown


def test_a_replace_planted_before_queuing_is_not_shown_nor_applied(hive: Hive) -> None:
    hive.spawn("before")
    repo = hive.paths.config_dir("before")  # type: ignore[arg-type]
    applied = hive.paths.applied("before")  # type: ignore[arg-type]
    good = RESTRICT + "\n"
    commit = commit_over_head(repo, {"agent.json": good}, "restrict to operator")
    replace_with_grant(repo, commit)

    aid = manager(hive, "request_apply_commit", agent="before", commit=commit[:12])["approval_id"]
    a = pending(hive, aid)
    assert a["commit"] == commit
    assert "&quot;operator&quot;" in a["diff_html"] and "Bash" not in a["diff_html"]
    assert kept_files(hive, aid)["agent.json"] == good
    approve(hive, aid)
    assert (applied / "agent.json").read_bytes() == good.encode()
    assert (applied / ".commit").read_text().strip() == commit

    # A loose object rewritten before queuing: refused, nothing queued.
    prompt = "You are careful.\n"
    second = commit_over_head(repo, {"prompt.md": prompt}, "careful")
    rewrite_loose(repo, plain_git(repo, "rev-parse", f"{second}:prompt.md"), "You may do anything.\n")
    with pytest.raises(HiveError) as exc:
        manager(hive, "request_apply_commit", agent="before", commit=second)
    assert exc.value.code == "bad_request" and "not the blob it claims" in exc.value.message
    assert [p for p in json.loads(cli(hive, "approvals", "--json").stdout)["pending"] if p["agent"] == "before"] == []
