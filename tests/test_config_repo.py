"""hyperhive.config_repo against real git repos: the hardened git argv and
environment (pure), and a repo full of traps (hooks, a hooksPath and an
fsmonitor in its own config, filters and textconv, replace refs, a lying loose
object, odd tree entries) that runs nothing and changes no byte (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import zlib
from pathlib import Path

import pytest

from hyperhive import config_repo
from hyperhive.config_repo import GIT_CONFIG, git_command, git_env
from hyperhive.errors import BadRequest

HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "reference-transaction",
         "post-index-change", "pre-auto-gc", "post-checkout", "post-rewrite", "pre-push", "fsmonitor-watchman")
PLAIN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
             "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def plain_git(repo: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    """A human's (or an attacker's) git: the repo's own config and hooks apply."""
    r = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@x", *args],
                       input=input, capture_output=True, env=PLAIN_ENV, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"git {args} failed: {r.stderr.decode()}")
    return r.stdout.decode().strip()


def script(path: Path, marks: Path) -> Path:
    """An executable that notes its own name (and swallows stdin) in ``marks``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {marks}\ncat >/dev/null 2>&1\nexit 0\n')
    path.chmod(0o755)
    return path


def plant_traps(repo: Path, marks: Path) -> None:
    """Everything in a repo that git could run: hooks in .git/hooks and in a
    hooksPath named by the repo's own config, an fsmonitor, filter and diff
    drivers for every path, an external diff, a pager, a gpg program, an ssh
    command, and a core.worktree pointing elsewhere."""
    other_hooks = repo.parent / f"{repo.name}-hooks"
    for h in HOOKS:
        script(repo / ".git" / "hooks" / h, marks)
        script(other_hooks / h, marks)
    tool = script(repo.parent / f"{repo.name}-tool", marks)
    settings = {
        "core.hooksPath": str(other_hooks), "core.fsmonitor": str(tool), "core.untrackedCache": "true",
        "filter.evil.clean": str(tool), "filter.evil.smudge": str(tool), "filter.evil.process": str(tool),
        "filter.evil.required": "true", "diff.evil.textconv": str(tool), "diff.evil.command": str(tool),
        "diff.external": str(tool), "core.pager": str(tool), "pager.show": str(tool),
        "commit.gpgSign": "true", "gpg.program": str(tool), "core.sshCommand": str(tool),
        "core.worktree": str(repo.parent / f"{repo.name}-elsewhere"), "core.editor": str(tool),
    }
    for key, value in settings.items():
        plain_git(repo, "config", key, value)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* filter=evil diff=evil\n")
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "agent.json").write_text('{\n  "allowed_recipients": ["operator"]\n}\n')
    config_repo.init_repo(d, "a", "You are a.\n")
    return d


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    return tmp_path / "marks.txt"


def ran(marks: Path) -> str:
    return marks.read_text() if marks.exists() else ""


# --- the argv and environment (pure) ----------------------------------------------------

def test_git_env_is_built_from_nothing() -> None:
    assert git_env("/x/bin") == {
        "PATH": "/x/bin", "HOME": "/nonexistent", "LC_ALL": "C",
        "GIT_NO_REPLACE_OBJECTS": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_ATTR_NOSYSTEM": "1",
    }
    assert git_env(None)["PATH"] == config_repo.DEFAULT_PATH
    who = git_env("/p", ("m1nd", "m1nd@hyperhive"))
    assert {k: v for k, v in who.items() if k.startswith(("GIT_AUTHOR", "GIT_COMMITTER"))} == {
        "GIT_AUTHOR_NAME": "m1nd", "GIT_AUTHOR_EMAIL": "m1nd@hyperhive",
        "GIT_COMMITTER_NAME": "m1nd", "GIT_COMMITTER_EMAIL": "m1nd@hyperhive"}


def test_git_env_takes_nothing_from_the_daemons_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"GIT_DIR": "/elsewhere", "GIT_CONFIG_PARAMETERS": "'core.hookspath'='/h'",
                 "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": "/h",
                 "GIT_EXEC_PATH": "/evil", "GIT_REPLACE_REF_BASE": "refs/evil/", "LD_PRELOAD": "/evil.so",
                 "ANTHROPIC_API_KEY": "secret"}.items():
        monkeypatch.setenv(k, v)
    argv, env = git_command(Path("/r"), ["status"], path="/bin")
    assert env == git_env("/bin")
    assert not any(k.startswith("GIT_CONFIG_") and k not in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
                                                             "GIT_CONFIG_NOSYSTEM") for k in env)


def test_git_command_names_the_repo_and_sets_every_guard_before_the_subcommand() -> None:
    argv, _ = git_command(Path("/s/agents/a/config"), ["cat-file", "--batch"])
    assert argv[:4] == ["git", "--no-pager", "--git-dir=/s/agents/a/config/.git", "--work-tree=/s/agents/a/config"]
    assert argv[-2:] == ["cat-file", "--batch"]
    flags = argv[4:-2]
    assert flags == [x for k, v in GIT_CONFIG for x in ("-c", f"{k}={v}")]
    settings = dict(GIT_CONFIG)
    for key, value in {"core.hooksPath": "/dev/null", "core.fsmonitor": "false", "core.untrackedCache": "false",
                       "protocol.file.allow": "never", "protocol.allow": "never", "core.useReplaceRefs": "false",
                       "core.commitGraph": "false", "core.attributesFile": "/dev/null",
                       "commit.gpgSign": "false"}.items():
        assert settings[key] == value


# --- a repo full of traps ---------------------------------------------------------------

@pytest.mark.e2e  # git-heavy: a repo full of traps, many real git runs
def test_the_traps_are_live_for_plain_git(repo: Path, marks: Path, tmp_path: Path) -> None:
    """The traps the next test survives do run under a plain git (else it proves nothing)."""
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, symlinks=True)
    plant_traps(copy, marks)
    plain_git(copy, "config", "--unset", "filter.evil.process")  # it would hang a plain git: no handshake
    plain_git(copy, f"--work-tree={copy}", "status", check=False)
    assert "tool" in ran(marks)  # the fsmonitor (and the clean filter)
    marks.unlink()
    plain_git(copy, f"--work-tree={copy}", "-c", "commit.gpgSign=false",
              "commit", "--allow-empty", "-qm", "x", check=False)
    assert "copy-hooks/pre-commit" in ran(marks) and "reference-transaction" in ran(marks)


@pytest.mark.e2e  # git-heavy: a repo full of traps, many real git runs
def test_nothing_in_the_repo_runs_when_the_daemon_commits_reads_and_applies(
        repo: Path, marks: Path, tmp_path: Path) -> None:
    plant_traps(repo, marks)
    head = config_repo.resolve_commit(repo, "HEAD")
    new = config_repo.commit_change(repo, {"prompt.md": "You review code.\n",
                                           "agent.json": '{"allowed_recipients": ["m1nd"]}\n'}, "review", "m1nd")
    assert config_repo.resolve_commit(repo, "HEAD") == new != head
    files = config_repo.commit_files(repo, new)
    assert files == {"agent.json": '{"allowed_recipients": ["m1nd"]}\n', "prompt.md": "You review code.\n"}
    applied = tmp_path / "applied" / "a"
    config_repo.materialize(repo, new, applied)
    config_repo.write_applied(files, new, applied)
    assert config_repo.init_repo(repo, "a") == new  # an existing repo: left as it is
    with pytest.raises(BadRequest, match="already has"):
        config_repo.commit_change(repo, {"prompt.md": "You review code.\n"}, "again", "m1nd")
    assert ran(marks) == ""
    assert not (tmp_path / "config-elsewhere").exists()  # core.worktree was not followed
    # What was committed is what was given, unfiltered; the work tree follows.
    assert plain_git(repo, f"--work-tree={repo}", "cat-file", "blob", f"{new}:prompt.md") == \
        "You review code."
    assert (repo / "prompt.md").read_text() == "You review code.\n"
    assert plain_git(repo, "log", "-1", "--format=%an <%ae> %cn %s", new) == "m1nd <m1nd@hyperhive> m1nd review"
    assert plain_git(repo, "cat-file", "-p", new).count("gpgsig") == 0


@pytest.mark.e2e  # git-heavy: a repo full of traps, many real git runs
def test_the_daemons_own_git_environment_does_not_reach_git(
        repo: Path, marks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = tmp_path / "env-hooks"
    for h in HOOKS:
        script(hooks / h, marks)
    other = tmp_path / "other"
    other.mkdir()
    plain_git(other, "init", "-q")
    for k, v in {"GIT_DIR": str(other / ".git"), "GIT_WORK_TREE": str(other),
                 "GIT_INDEX_FILE": str(tmp_path / "evil-index"), "GIT_OBJECT_DIRECTORY": str(other / ".git/objects"),
                 "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": str(hooks),
                 "GIT_CONFIG_PARAMETERS": f"'core.hookspath'='{hooks}'", "GIT_AUTHOR_NAME": "spoof"}.items():
        monkeypatch.setenv(k, v)
    new = config_repo.commit_change(repo, {"prompt.md": "env\n"}, "env", "m1nd")
    assert ran(marks) == "" and not (tmp_path / "evil-index").exists()
    monkeypatch.undo()
    assert plain_git(repo, "log", "-1", "--format=%H %an") == f"{new} m1nd"
    assert plain_git(other, "rev-list", "--all") == ""


def test_a_fresh_repo_commits_only_its_two_files_and_follows_no_link(tmp_path: Path) -> None:
    d = tmp_path / "config"
    d.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    (d / "agent.json").symlink_to(secret)
    (d / "prompt.md").symlink_to(tmp_path / "created-through-a-link")
    (d / "notes.txt").write_text("not config\n")
    head = config_repo.init_repo(d, "a")
    assert config_repo.commit_files(d, head) == {}  # neither link was read or written through
    assert not (tmp_path / "created-through-a-link").exists()
    assert not (d / ".git" / "hooks").exists()  # no template copied in
    d2 = tmp_path / "config2"
    d2.mkdir()
    (d2 / "agent.json").write_text("{}\n")
    head2 = config_repo.init_repo(d2, "b", "hello\n")
    assert config_repo.commit_files(d2, head2) == {"agent.json": "{}\n", "prompt.md": "hello\n"}
    assert plain_git(d2, "status", "--porcelain") == ""  # index and work tree agree with HEAD


# --- objects that lie -------------------------------------------------------------------

def _blob(repo: Path, text: str) -> str:
    return plain_git(repo, "hash-object", "-w", "--stdin", input=text.encode())


def test_replace_refs_do_not_change_what_is_read(repo: Path) -> None:
    new = config_repo.commit_change(repo, {"agent.json": '{"allowed_recipients": ["operator"]}\n'}, "restrict", "m1nd")
    real = plain_git(repo, "rev-parse", f"{new}:agent.json")
    evil = _blob(repo, '{"allowed_tools": ["Bash", "Edit"]}\n')
    plain_git(repo, "replace", real, evil)
    # and the commit itself, replaced by one whose tree grants everything
    evil_tree = plain_git(repo, "mktree", input=f"100644 blob {evil}\tagent.json\n".encode())
    evil_commit = plain_git(repo, "commit-tree", evil_tree, "-m", "evil")
    plain_git(repo, "replace", new, evil_commit)
    assert "Bash" in plain_git(repo, "show", f"{new}:agent.json")  # a plain git is fooled
    assert config_repo.resolve_commit(repo, "HEAD") == new
    assert config_repo.commit_files(repo, new)["agent.json"] == '{"allowed_recipients": ["operator"]}\n'


def _loose(repo: Path, oid: str) -> Path:
    return repo / ".git" / "objects" / oid[:2] / oid[2:]


def test_a_loose_object_whose_bytes_are_not_its_id_is_refused(repo: Path) -> None:
    new = config_repo.commit_change(repo, {"agent.json": '{"allowed_recipients": ["operator"]}\n'}, "restrict", "m1nd")
    real = plain_git(repo, "rev-parse", f"{new}:agent.json")
    body = b'{"allowed_tools": ["Bash"]}\n'
    p = _loose(repo, real)
    os.chmod(p, 0o644)
    p.write_bytes(zlib.compress(b"blob %d\0" % len(body) + body))
    assert "Bash" in plain_git(repo, "cat-file", "blob", real)  # git hands back the planted bytes
    with pytest.raises(BadRequest, match="not the blob it claims"):
        config_repo.commit_files(repo, new)


@pytest.mark.e2e  # git-heavy: a repo full of traps, many real git runs
def test_gitattributes_in_the_commit_change_no_byte(repo: Path, marks: Path, tmp_path: Path) -> None:
    """A commit carrying a .gitattributes (filter, textconv, eol, ident) with
    the drivers in the repo's config: read and applied byte for byte."""
    attrs = "* filter=evil diff=evil text eol=crlf ident\n"
    prompt = "$Id$\nline one\nline two\n"
    oids = {n: _blob(repo, t) for n, t in ((".gitattributes", attrs), ("prompt.md", prompt))}
    tree = plain_git(repo, "mktree", input="".join(f"100644 blob {o}\t{n}\n" for n, o in oids.items()).encode())
    commit = plain_git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "attrs")
    plant_traps(repo, marks)
    files = config_repo.commit_files(repo, config_repo.resolve_commit(repo, commit))
    assert files == {".gitattributes": attrs, "prompt.md": prompt}
    applied = tmp_path / "applied"
    config_repo.write_applied(files, commit, applied)
    assert (applied / "prompt.md").read_bytes() == prompt.encode()
    assert ran(marks) == ""


def _raw_tree(entries: list[tuple[bytes, bytes, str]]) -> bytes:
    return b"".join(mode + b" " + name + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries)


@pytest.mark.parametrize(("mode", "name", "match"), [
    (b"100644", b"..", "cannot hold"),
    (b"100644", b".git", "cannot hold"),
    (b"100644", b".GIT", "cannot hold"),
    (b"100644", b".commit", "cannot hold"),
    (b"120000", b"prompt.md", "not a regular file"),
    (b"160000", b"prompt.md", "not a regular file"),
    (b"100644", b"\xff.md", "malformed"),
])
def test_odd_tree_entries_are_refused(repo: Path, mode: bytes, name: bytes, match: str) -> None:
    blob = _blob(repo, "x\n")
    raw = _raw_tree([(mode, name, blob)])
    tree = plain_git(repo, "hash-object", "-t", "tree", "-w", "--literally", "--stdin", input=raw)
    commit = plain_git(repo, "commit-tree", tree, "-m", "odd")
    with pytest.raises(BadRequest, match=match):
        config_repo.commit_files(repo, commit)


def test_a_nested_file_and_a_non_utf8_file(repo: Path) -> None:
    blob = _blob(repo, "nested\n")
    sub = plain_git(repo, "mktree", input=f"100644 blob {blob}\tmod.nix\n".encode())
    top = plain_git(repo, "mktree", input=f"040000 tree {sub}\tnix\n".encode())
    commit = plain_git(repo, "commit-tree", top, "-m", "nested")
    assert config_repo.commit_files(repo, commit) == {"nix/mod.nix": "nested\n"}
    bad = plain_git(repo, "hash-object", "-w", "--stdin", input=b"\xff\xfe")
    commit2 = plain_git(repo, "commit-tree", plain_git(repo, "mktree", input=f"100644 blob {bad}\tprompt.md\n"
                                                        .encode()), "-m", "latin")
    with pytest.raises(BadRequest, match="not UTF-8"):
        config_repo.commit_files(repo, commit2)


def test_a_sha256_repository(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    plain_git(d, "init", "-q", "--object-format=sha256")
    (d / "prompt.md").write_text("sha256\n")
    plain_git(d, "add", "prompt.md")
    plain_git(d, "commit", "-qm", "one")
    head = config_repo.resolve_commit(d, "HEAD")
    assert len(head) == 64
    new = config_repo.commit_change(d, {"agent.json": "{}\n"}, "two", "m1nd")
    assert config_repo.commit_files(d, new) == {"agent.json": "{}\n", "prompt.md": "sha256\n"}


def test_a_git_file_or_link_instead_of_a_repo_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    config_repo.init_repo(real, "a")
    d = tmp_path / "c"
    d.mkdir()
    (d / ".git").write_text(f"gitdir: {real / '.git'}\n")
    with pytest.raises(BadRequest, match="not a git repository"):
        config_repo.resolve_commit(d, "HEAD")
    (d / ".git").unlink()
    (d / ".git").symlink_to(real / ".git")
    with pytest.raises(BadRequest, match="not a git repository"):
        config_repo.commit_change(d, {"prompt.md": "x"}, "x", "m1nd")


# --- the applied dir --------------------------------------------------------------------

def test_write_applied_writes_exactly_the_bytes(tmp_path: Path) -> None:
    applied = tmp_path / "applied" / "a"
    files = {"agent.json": '{"allowed_recipients": ["operator"]}\r\n', "prompt.md": "Grüße\r\nno newline",
             "nix/agent.nix": "{ }\n"}
    config_repo.write_applied(files, "ab" * 20, applied)
    for name, text in files.items():
        assert (applied / name).read_bytes() == text.encode()
    assert (applied / ".commit").read_text() == "ab" * 20 + "\n"
    config_repo.write_applied({"prompt.md": "only\n"}, "cd" * 20, applied)  # swapped in whole
    assert sorted(p.name for p in applied.iterdir()) == [".commit", "prompt.md"]
    assert config_repo.applied_files(applied) == {"prompt.md": "only\n"}
    assert stat.S_IMODE((applied / "prompt.md").stat().st_mode) & 0o044 == 0o044


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", ".commit", ".git/config", "a//b", "a/./b", "x\ny"])
def test_write_applied_refuses_odd_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadRequest):
        config_repo.write_applied({name: "x"}, "ab" * 20, tmp_path / "applied")
    assert not (tmp_path / "applied").exists()


def test_check_files_wants_a_map_of_text() -> None:
    assert config_repo.check_files(json.loads('{"prompt.md": "x"}')) == {"prompt.md": "x"}
    bad: object
    for bad in ([], {"prompt.md": 1}, "x", None):
        with pytest.raises(BadRequest):
            config_repo.check_files(bad)
