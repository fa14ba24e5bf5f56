"""Review of issue 14 (hostile agent): a pack bomb through the pull.

The agent controls its clone's object store. A 16 KiB bundle can carry one
OFS_DELTA whose result is many copies of a 16 MiB zero blob (5 bytes of delta
per 16 MiB of result; the delta compresses to nearly nothing). ``git bundle
create`` on the agent's side reuses the delta verbatim (about 5 MB of RSS), but
``index-pack --strict`` in the operator's repo, run by the daemon as the repo's
owner, outside any cgroup, must apply it: it allocates the whole result (and
more). Measured by hand: 16 KiB bundle, 1 GiB object → 2.1 GB RSS, 7 s; the
size grows linearly with the copies (256 copies: a 4 GiB object, ~8.5 GB), far
below the 1 GiB bundle cap. Nothing bounds what index-pack may allocate:
``GIT_ALLOC_LIMIT`` (git dies "attempting to allocate … over limit") or a
memory cgroup / RLIMIT_AS on that one call would.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_config_repo import PLAIN_ENV
from test_workspace import UIDS, as_agent, make_op, make_paths, owner

from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace

A = AgentName("ag1")
BASE = (16 << 20) - 1  # a copy instruction moves at most 2**24-1 bytes
LIMIT_KIB = 256 << 10  # what one pull's git may take, at most, in this test's eyes


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def _hdr(kind: int, size: int) -> bytes:
    b, size, out = (kind << 4) | (size & 15), size >> 4, bytearray()
    while size:
        out.append(b | 0x80)
        b, size = size & 0x7F, size >> 7
    out.append(b)
    return bytes(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _ofs(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        n -= 1
        out.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes(out)


def write_delta_bomb(pack_dir: Path, copies: int) -> tuple[str, str]:
    """A pack (and its .idx, written here: nothing is inflated) with a zero blob of
    BASE bytes and a delta on it whose result is ``copies`` of it. (bomb id, base id)."""
    base = b"\0" * BASE
    op = bytes([0x80 | 0x10 | 0x20 | 0x40]) + struct.pack("<I", BASE)[:3]  # copy 0..BASE
    delta = _varint(BASE) + _varint(BASE * copies) + op * copies
    e1 = _hdr(3, BASE) + zlib.compress(base, 9)
    e2 = _hdr(6, len(delta)) + _ofs(len(e1)) + zlib.compress(delta, 9)
    body = b"PACK" + struct.pack(">II", 2, 2) + e1 + e2
    pack = body + hashlib.sha1(body).digest()
    id1 = hashlib.sha1(b"blob %d\0" % BASE + base).digest()
    h = hashlib.sha1(b"blob %d\0" % (BASE * copies))
    for _ in range(copies):
        h.update(base)
    id2 = h.digest()
    ents = sorted([(id1, 12, binascii.crc32(e1)), (id2, 12 + len(e1), binascii.crc32(e2))])
    idx = b"\377tOc" + struct.pack(">I", 2)
    idx += b"".join(struct.pack(">I", sum(1 for e in ents if e[0][0] <= i)) for i in range(256))
    idx += b"".join(e[0] for e in ents) + b"".join(struct.pack(">I", e[2]) for e in ents)
    idx += b"".join(struct.pack(">I", e[1]) for e in ents) + pack[-20:]
    idx += hashlib.sha1(idx).digest()
    for ext, data in (("pack", pack), ("idx", idx)):
        f = pack_dir / f"pack-{pack[-20:].hex()}.{ext}"
        f.write_bytes(data)
        if os.geteuid() == 0:
            os.chown(f, UIDS["ag1"], UIDS["ag1"])
    return id2.hex(), id1.hex()


def _mktree(work: Path, spec: str) -> str:
    r = subprocess.run(["git", "-C", str(work), "mktree"], input=spec.encode(), capture_output=True, env=PLAIN_ENV,
                       timeout=30, **({"user": UIDS["ag1"], "group": UIDS["ag1"], "extra_groups": []}
                                      if os.geteuid() == 0 else {}))
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


_PULL = """
import json, resource, sys

import pytest
from pathlib import Path
from hyperhive.errors import HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.accounts import Account
from hyperhive.workspace_pull import pull
uid = int(sys.argv[2])
acct = Account(uid, uid, True) if uid >= 0 else None
try:
    pull(StatePaths(Path(sys.argv[1])), AgentName("ag1"), acct)
    out = "pulled"
except HiveError as exc:
    out = type(exc).__name__ + ": " + str(exc)[:300]
print(json.dumps({"out": out, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_a_delta_bomb_does_not_make_index_pack_allocate_gigabytes(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    bomb, base = write_delta_bomb(paths.workspace(A) / ".git" / "objects" / "pack", copies=32)  # a 512 MiB blob
    tree = _mktree(paths.workspace(A), f"100644 blob {bomb}\tbomb\n100644 blob {base}\tzero\n")
    commit = as_agent(paths, "ag1", "commit-tree", "-m", "bomb", "-p", "HEAD", tree)
    as_agent(paths, "ag1", "update-ref", "refs/heads/hive/ag1", commit)
    uid = UIDS["ag1"] if os.geteuid() == 0 else -1
    r = subprocess.run([sys.executable, "-c", _PULL, str(paths.root), str(uid)], capture_output=True,
                       timeout=300, cwd=str(Path(__file__).resolve().parents[2]))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got = json.loads(r.stdout.decode().splitlines()[-1])
    # Today: pulled, with the operator-side index-pack at ~1 GB of RSS from a ~10 KiB bundle.
    assert got["maxrss_kib"] < LIMIT_KIB, got
    assert got["out"].startswith("Conflict: ag1's branch was refused by the operator's repository"), got
