"""Each agent's proposed config is a git repository at `agents/<name>/config/`
(F12): `agent.json` and `prompt.md`, which the manager may commit to.
`applied/<name>/` holds the tree of the commit the container runs with, and
`.commit` names that commit.

Every git call goes through ``_git`` with a fixed argv (no shell); a commit
argument is checked before it reaches git, so it can never be an option.
"""

from __future__ import annotations

import difflib
import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from hyperhive.errors import BadRequest, Internal
from hyperhive.paths import CONFIG_FILE

__all__ = [
    "APPLIED_MARK",
    "PROMPT_FILE",
    "applied_files",
    "commit_change",
    "commit_files",
    "diff_html",
    "init_repo",
    "materialize",
    "resolve_commit",
]

PROMPT_FILE = "prompt.md"
APPLIED_MARK = ".commit"
MAX_FILE = 1 << 20
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{4,64}|HEAD(~[0-9]{1,4})?")
_IDENTITY = ("-c", "user.name=hyperhive", "-c", "user.email=hyperhive@localhost", "-c", "commit.gpgsign=false")
DEFAULT_PROMPT = "You are {name}, an agent of this hive. Your notes live in your state dir.\n"


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    r = subprocess.run(["git", "-C", str(repo), *_IDENTITY, *args], capture_output=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise Internal(f"git {' '.join(args[:2])} failed in {repo}: {r.stderr.decode(errors='replace').strip()}")
    return r


def init_repo(config_dir: Path, name: str, prompt: str | None = None) -> str:
    """Make ``config_dir`` a git repo with a prompt and commit what is there; returns HEAD.

    An existing repo (a revived agent) is left as it is.
    """
    if (config_dir / ".git").exists():
        return resolve_commit(config_dir, "HEAD")
    config_dir.mkdir(parents=True, exist_ok=True)
    p = config_dir / PROMPT_FILE
    if not p.exists():
        p.write_text(prompt if prompt is not None else DEFAULT_PROMPT.format(name=name))
    _git(config_dir, "init", "-q", "-b", "main")
    _git(config_dir, "add", "-A")
    _git(config_dir, "commit", "-q", "-m", f"initial config of {name}")
    return resolve_commit(config_dir, "HEAD")


def resolve_commit(config_dir: Path, commit: str) -> str:
    """The full id of ``commit`` in the agent's config repo, or a clear BadRequest."""
    if not isinstance(commit, str) or not _COMMIT_RE.fullmatch(commit):
        raise BadRequest(f"commit must be a commit id (4 to 64 hex digits) or HEAD, got {commit!r}")
    if not (config_dir / ".git").exists():
        raise BadRequest(f"{config_dir} is not a git repository")
    r = _git(config_dir, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
    if r.returncode != 0:
        raise BadRequest(f"no commit {commit!r} in {config_dir.parent.name}'s config repository")
    return r.stdout.decode().strip()


def commit_change(config_dir: Path, files: dict[str, str], message: str, author: str) -> str:
    """Write ``files`` (name → text) into the repo and commit just them; returns the commit.

    Names are plain file names of the config (no dirs, no dot files); a change
    that changes nothing is refused.
    """
    if not files:
        raise BadRequest("nothing to change: give the new prompt and/or agent.json")
    if not message.strip():
        raise BadRequest("a commit message is needed")
    for name in files:
        if name not in (CONFIG_FILE, PROMPT_FILE):
            raise BadRequest(f"only {CONFIG_FILE} and {PROMPT_FILE} can be changed, not {name!r}")
    if not (config_dir / ".git").exists():
        raise BadRequest(f"{config_dir} is not a git repository")
    for name, text in files.items():
        (config_dir / name).write_text(text)
    names = sorted(files)
    _git(config_dir, "add", "--", *names)
    if _git(config_dir, "diff", "--cached", "--quiet", "--", *names, check=False).returncode == 0:
        raise BadRequest("the proposed files are what the repository already has")
    _git(config_dir, "-c", f"user.name={author}", "-c", f"user.email={author}@hyperhive",
         "commit", "-q", "-m", message, "--", *names)
    return resolve_commit(config_dir, "HEAD")


def commit_files(config_dir: Path, commit: str) -> dict[str, str]:
    """Every file of ``commit``'s tree, as text."""
    names = _git(config_dir, "ls-tree", "-r", "-z", "--name-only", commit).stdout.decode().split("\0")
    out: dict[str, str] = {}
    for name in filter(None, names):
        blob = _git(config_dir, "show", f"{commit}:{name}").stdout
        if len(blob) > MAX_FILE:
            raise BadRequest(f"{name} in {commit[:12]} is over {MAX_FILE} bytes")
        out[name] = blob.decode(errors="replace")
    return out


def applied_files(applied_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not applied_dir.is_dir():
        return out
    for p in sorted(applied_dir.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != APPLIED_MARK:
            out[str(p.relative_to(applied_dir))] = p.read_text(errors="replace")
    return out


def materialize(config_dir: Path, commit: str, applied_dir: Path) -> None:
    """Make ``applied_dir`` hold exactly ``commit``'s tree (swapped in whole)."""
    files = commit_files(config_dir, commit)
    applied_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{applied_dir.name}-", dir=applied_dir.parent))
    try:
        for name, text in files.items():
            target = (tmp / name).resolve()
            if not target.is_relative_to(tmp.resolve()):
                raise BadRequest(f"path {name!r} escapes the config tree")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        (tmp / APPLIED_MARK).write_text(commit + "\n")
        old = applied_dir.with_name(f".{applied_dir.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        if applied_dir.exists():
            applied_dir.rename(old)
        tmp.rename(applied_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def diff_html(old: dict[str, str], new: dict[str, str]) -> str:
    """A unified diff of two file sets as escaped HTML, one span per line (pure)."""
    chunks: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        lines = difflib.unified_diff(
            (a or "").splitlines(), (b or "").splitlines(),
            fromfile=f"a/{name}" if a is not None else "/dev/null",
            tofile=f"b/{name}" if b is not None else "/dev/null", lineterm="",
        )
        for line in lines:
            cls = ("file" if line.startswith(("---", "+++")) else "hunk" if line.startswith("@@")
                   else "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
            chunks.append(f'<span class="diff-{cls}">{html.escape(line)}</span>')
    if not chunks:
        return '<pre class="diff"><span class="diff-ctx">(no changes)</span></pre>'
    return '<pre class="diff">' + "\n".join(chunks) + "</pre>"
