"""`--pull-max-bundle-bytes` reaches the daemon's pulls (issue 14): a branch
whose bundle is bigger is refused by `hive pull`, saying so, and the
operator's repo is not moved; under the default it goes through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import Hive
from test_purge_e2e import as_owner, operator_repo
from workspace_status_repos import git

pytestmark = pytest.mark.e2e

LIMIT = 1 << 20  # the smallest the setting takes


def cli(hive: Hive, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=90)


def big_commit(work: Path) -> str:
    """The agent commits 2 MiB that do not compress (so its bundle is over LIMIT)."""
    st = os.lstat(work)
    f = work / "blob.bin"
    f.write_bytes(os.urandom(2 << 20))
    os.chown(f, st.st_uid, st.st_gid)
    as_owner(work, "add", "blob.bin")
    as_owner(work, "commit", "-q", "-m", "a big commit")
    return as_owner(work, "rev-parse", "HEAD")


@pytest.mark.parametrize("limit", [LIMIT, None], ids=["over-the-limit", "default"])
def test_pull_max_bundle_bytes_bounds_a_pull(tmp_path: Path, limit: int | None) -> None:
    repo = operator_repo(tmp_path)
    extra = ["--sandbox", "off"] + ([] if limit is None else ["--pull-max-bundle-bytes", str(limit)])
    hive = Hive(tmp_path / "state", extra).start()
    try:
        hive.spawn("big", repo=str(repo))
        cli(hive, "stop", "big")
        oid = big_commit(hive.paths.workspace("big"))  # type: ignore[arg-type]
        before = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
        r = cli(hive, "pull", "big")
    finally:
        hive.stop()
    if limit is not None:
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert f"more than {limit} bytes" in r.stderr
        assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == before
    else:
        assert r.returncode == 0, r.stderr
        assert git(repo, "rev-parse", "refs/heads/hive/big") == oid
