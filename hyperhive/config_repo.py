"""Each agent's proposed config is a git repository at `agents/<name>/config/`
(F12): `agent.json` and `prompt.md`, which the manager may commit to.
`applied/<name>/` holds the files of the commit the container runs with, and
`.commit` names that commit.

The repository is data the daemon does not trust (issue 12): anything may
have been planted in it, hooks, a ``core.fsmonitor`` or ``core.hooksPath`` in
its own ``.git/config``, filters and textconv in ``.gitattributes``, replace
refs, a lying commit-graph. So:

- every git call is built by ``git_command`` (pure): a fixed argv, no shell,
  the repo named explicitly (``--git-dir``/``--work-tree``), ``-c`` settings
  that turn off everything git could run (they beat the repo's own config),
  and an environment made from nothing (no ``GIT_*`` of the daemon's, no
  global or system config, no replace objects);
- git never touches the work tree: blobs are written with ``hash-object
  --stdin`` (no filters), trees with ``mktree``, commits with ``commit-tree``,
  the index with ``update-index --cacheinfo``; the daemon writes the work
  tree's files itself. Nothing is checked out, added, diffed or shown, so no
  filter, textconv or external diff is ever looked up;
- objects are read raw with ``cat-file --batch`` and each one's id is checked
  against its bytes here (``read_commit``): a planted replacement, a
  corrupted loose object or a lying index cannot make git hand back other
  bytes under a commit's name;
- an approval keeps the bytes it showed (``commit_files`` at queue time) and
  ``write_applied`` writes exactly those: the repo is never read again.

The git runner and the checked object reads are `config_git`; the diff the
operator reviews is `config_diff`; commits and the applied dir are here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.config_diff import diff_html
from hyperhive.config_git import (
    DEFAULT_PATH,
    FULL_ID,
    GIT_CONFIG,
    checked_repo,
    git_command,
    git_env,
    read_objects,
    run_git,
    tree_entries,
    tree_of,
)
from hyperhive.errors import BadRequest
from hyperhive.paths import CONFIG_FILE
from hyperhive.sandbox.safefs import read_nofollow

__all__ = [
    "APPLIED_MARK",
    "CONFIG_FILE",
    "DEFAULT_PATH",
    "GIT_CONFIG",
    "PROMPT_FILE",
    "applied_files",
    "check_files",
    "commit_change",
    "commit_files",
    "diff_html",
    "git_command",
    "git_env",
    "init_repo",
    "materialize",
    "read_commit",
    "resolve_commit",
    "write_applied",
]

_log = logs.get("hyperhive.config_repo")

PROMPT_FILE = "prompt.md"
APPLIED_MARK = ".commit"
MAX_FILE = 1 << 20
MAX_FILES = 64
MAX_DEPTH = 8
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{4,64}|HEAD(~[0-9]{1,4})?")
DEFAULT_PROMPT = "You are {name}, an agent of this hive. Your notes live in your state dir.\n"
_HYPERHIVE = ("hyperhive", "hyperhive@localhost")
_KINDS = {"40000": "tree", "160000": "commit"}  # tree entry mode → object type (else blob)


# --- reading a commit ------------------------------------------------------------------

def _check_name(name: str) -> None:
    """A config file's path: relative, plain components, nothing git or the
    applied dir keeps for itself."""
    parts = name.split("/")
    if name == APPLIED_MARK or any(
        not p or p in (".", "..") or p.lower() == ".git" or any(ord(c) < 32 for c in p) for p in parts
    ):
        raise BadRequest(f"the config cannot hold a file named {name!r}")


def read_commit(config_dir: Path, commit: str) -> dict[str, bytes]:
    """Every file of ``commit``'s tree (path → bytes), each object checked
    against its id. Only regular files; no links, no submodules."""
    repo = checked_repo(config_dir)
    if not FULL_ID.fullmatch(commit):
        raise BadRequest(f"not a full commit id: {commit!r}")
    hexlen = len(commit)
    blobs: dict[str, str] = {}  # path → oid
    level = [("", tree_of(read_objects(repo, [commit], "commit")[commit]))]
    for _depth in range(MAX_DEPTH):
        trees = read_objects(repo, list(dict.fromkeys(oid for _, oid in level)), "tree")
        nxt: list[tuple[str, str]] = []
        for prefix, oid in level:
            for mode, name, child in tree_entries(trees[oid], hexlen):
                path = prefix + name
                _check_name(path)
                if mode == "40000":
                    nxt.append((path + "/", child))
                elif mode in ("100644", "100755"):
                    blobs[path] = child
                else:
                    raise BadRequest(f"{path} in {commit[:12]} is not a regular file (mode {mode})")
                if len(blobs) + len(nxt) > MAX_FILES:
                    raise BadRequest(f"{commit[:12]} has over {MAX_FILES} files")
        if not nxt:
            break
        level = nxt
    else:
        raise BadRequest(f"{commit[:12]} nests directories over {MAX_DEPTH} deep")
    data = read_objects(repo, list(dict.fromkeys(blobs.values())), "blob")
    out = {path: data[oid] for path, oid in sorted(blobs.items())}
    for path, raw in out.items():
        if len(raw) > MAX_FILE:
            raise BadRequest(f"{path} in {commit[:12]} is over {MAX_FILE} bytes")
    return out


def commit_files(config_dir: Path, commit: str) -> dict[str, str]:
    """Every file of ``commit`` as text (path → text; UTF-8, else refused), as
    read by ``read_commit``: the exact bytes are ``text.encode()``."""
    out: dict[str, str] = {}
    for path, raw in read_commit(config_dir, commit).items():
        try:
            out[path] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{path} in {commit[:12]} is not UTF-8 text") from None
    return out


# --- the repo --------------------------------------------------------------------------

def resolve_commit(config_dir: Path, commit: str) -> str:
    """The full id of ``commit`` in the agent's config repo, or a clear BadRequest."""
    if not isinstance(commit, str) or not _COMMIT_RE.fullmatch(commit):
        raise BadRequest(f"commit must be a commit id (4 to 64 hex digits) or HEAD, got {commit!r}")
    repo = checked_repo(config_dir)
    r = run_git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
    full = r.stdout.decode(errors="replace").strip()
    if r.returncode != 0 or not FULL_ID.fullmatch(full):
        raise BadRequest(f"no commit {commit!r} in {config_dir.parent.name}'s config repository")
    return full


def _write_file(repo: Path, name: str, data: bytes) -> None:
    """Replace ``repo/name`` (a top-level file) by a new file: a link there is
    replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=repo)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, repo / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit(repo: Path, entries: Mapping[str, tuple[str, str, str]], blobs: Mapping[str, bytes],
            parent: str | None, message: str, identity: tuple[str, str]) -> tuple[str, str, dict[str, str]]:
    """Write ``blobs`` (name → bytes) over ``entries`` (name → (mode, type,
    oid), a tree's) as a new commit; returns (commit, tree, name → blob id).
    ``hash-object --stdin`` without ``--path`` applies no filter."""
    merged = dict(entries)
    oids: dict[str, str] = {}
    for name, data in blobs.items():
        oid = run_git(repo, "hash-object", "-w", "--no-filters", "--stdin", input=data).stdout.decode().strip()
        merged[name] = ("100644", "blob", oid)
        oids[name] = oid
    listing = "".join(f"{mode} {kind} {oid}\t{name}\0" for name, (mode, kind, oid) in sorted(merged.items()))
    tree = run_git(repo, "mktree", "-z", input=listing.encode()).stdout.decode().strip()
    text = message if message.endswith("\n") else message + "\n"
    args = ["commit-tree", "--no-gpg-sign", *(("-p", parent) if parent else ()), tree]
    commit = run_git(repo, *args, input=text.encode(), identity=identity).stdout.decode().strip()
    return commit, tree, oids


def _advance(repo: Path, new: str, old: str | None, oids: Mapping[str, str], why: str) -> None:
    """Move HEAD's branch from ``old`` (None: unborn) to ``new`` (compare and
    swap), then the index entries of the files written (``oids``)."""
    run_git(repo, "update-ref", "-m", why, "HEAD", new, old or "")
    for name, oid in sorted(oids.items()):
        r = run_git(repo, "update-index", "--add", "--cacheinfo", f"100644,{oid},{name}", check=False)
        if r.returncode != 0:  # the commit stands; only a human's `git status` would notice
            _log.warning("config_repo.index_not_updated", repo=str(repo), error=r.stderr.decode(errors="replace"))


def init_repo(config_dir: Path, name: str, prompt: str | None = None) -> str:
    """Make ``config_dir`` a git repo with a prompt and commit its agent.json
    and prompt.md; returns HEAD. An existing repo (a revived agent) is left as
    it is."""
    if os.path.lexists(config_dir / ".git"):
        return resolve_commit(config_dir, "HEAD")
    config_dir.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(config_dir / PROMPT_FILE):
        text = prompt if prompt is not None else DEFAULT_PROMPT.format(name=name)
        _write_file(config_dir, PROMPT_FILE, text.encode())
    blobs: dict[str, bytes] = {}
    for f in (CONFIG_FILE, PROMPT_FILE):
        data = read_nofollow(config_dir, f, limit=MAX_FILE + 1)
        if data is not None:
            if len(data) > MAX_FILE:
                raise BadRequest(f"{config_dir / f} is over {MAX_FILE} bytes")
            blobs[f] = data
    run_git(config_dir, "init", "-q", "-b", "main", "--template=")
    commit, _, oids = _commit(config_dir, {}, blobs, None, f"initial config of {name}", _HYPERHIVE)
    _advance(config_dir, commit, None, oids, "hyperhive: initial config")
    return commit


def commit_change(config_dir: Path, files: dict[str, str], message: str, author: str) -> str:
    """Commit ``files`` (name → text) over HEAD's tree; returns the commit.

    Names are the config's two files; a change that changes nothing is refused.
    """
    if not files:
        raise BadRequest("nothing to change: give the new prompt and/or agent.json")
    if not message.strip():
        raise BadRequest("a commit message is needed")
    for name in files:
        if name not in (CONFIG_FILE, PROMPT_FILE):
            raise BadRequest(f"only {CONFIG_FILE} and {PROMPT_FILE} can be changed, not {name!r}")
    repo = checked_repo(config_dir)
    head = resolve_commit(repo, "HEAD")
    head_tree = tree_of(read_objects(repo, [head], "commit")[head])
    entries = {name: (mode, _KINDS.get(mode, "blob"), oid) for mode, name, oid
               in tree_entries(read_objects(repo, [head_tree], "tree")[head_tree], len(head))}
    blobs = {name: text.encode() for name, text in files.items()}
    commit, tree, oids = _commit(repo, entries, blobs, head, message, (author, f"{author}@hyperhive"))
    if tree == head_tree:
        raise BadRequest("the proposed files are what the repository already has")
    _advance(repo, commit, head, oids, f"hyperhive: {message.strip().splitlines()[0][:200]}")
    for name in sorted(blobs):  # the work tree follows, written by us (no checkout, no filter)
        _write_file(repo, name, blobs[name])
    return commit


# --- the applied dir -------------------------------------------------------------------

def check_files(files: object) -> dict[str, str]:
    """``files`` as an approval keeps them (path → text), checked again."""
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BadRequest("the approval's files are not a map of names to text")
    for name in files:
        _check_name(name)
    return dict(files)


def applied_files(applied_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not applied_dir.is_dir():
        return out
    for p in sorted(applied_dir.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != APPLIED_MARK:
            out[str(p.relative_to(applied_dir))] = p.read_bytes().decode(errors="replace")
    return out


def write_applied(files: Mapping[str, str], commit: str, applied_dir: Path) -> None:
    """Make ``applied_dir`` hold exactly ``files`` (path → text, written as its
    UTF-8 bytes) and ``.commit`` naming ``commit``; swapped in whole."""
    files = check_files(dict(files))
    applied_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{applied_dir.name}-", dir=applied_dir.parent))
    try:
        for name, text in files.items():
            target = (tmp / name).resolve()
            if not target.is_relative_to(tmp.resolve()):
                raise BadRequest(f"path {name!r} escapes the config tree")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode())
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


def materialize(config_dir: Path, commit: str, applied_dir: Path) -> None:
    """Make ``applied_dir`` hold exactly ``commit``'s files, read now (for the
    daemon's own commits: a spawn's first config)."""
    write_applied(commit_files(config_dir, commit), commit, applied_dir)
