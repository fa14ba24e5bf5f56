"""Issue 18's acceptance, end to end: a real daemon (`hive serve --backend ray
--agent-listen`) on a real local Ray cluster (a head with no CPUs, two worker
raylets offering ``pool: 1`` each), builtin agents whose harnesses run on the
workers and reach the daemon through their relay over TCP+TLS.

One cluster and one daemon for the module (Ray is heavy on two cores); the
node-loss test runs last (it removes a worker).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from support import Hive, wait_for

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray_support import RAY_ENV, ray_hive  # noqa: E402

from hyperhive import config_repo  # noqa: E402
from hyperhive.agent_secrets import AgentSecrets  # noqa: E402
from hyperhive.agent_wire import auth_line, client_context  # noqa: E402
from hyperhive.backends.ray_backend import actor_name  # noqa: E402
from hyperhive.backends.ray_connect import NAMESPACE  # noqa: E402
from hyperhive.errors import HiveError  # noqa: E402
from hyperhive.names import AgentName  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

_SECRETISH = re.compile(rb"[A-Za-z0-9_-]{43}")


class Rig:
    def __init__(self, cluster: Cluster, workers: list[Any], hive: Hive) -> None:
        self.cluster, self.workers, self.hive = cluster, workers, hive

    @property
    def worker_ids(self) -> set[str]:
        return {w.node_id for w in self.workers if w in self.cluster.worker_nodes}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    support.require_e2e("a Ray cluster and a daemon on it")
    with ray_hive(tmp_path_factory.mktemp("raye2e"), ["--agent-memory-mb", "512"], destroy=("a", "v")) as rigged:
        yield Rig(*rigged)


def _spawn(hive: Hive, name: str, **fields: Any) -> dict[str, Any]:
    hive.admin("spawn", name=name, **fields)
    return wait_for(lambda: (c := hive.ls()[name])["parked"]["system"] >= 1 and c, timeout=90,
                    what=f"{name}'s harness on its node")


def _reply_from(hive: Hive, name: str, needle: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for m in hive.admin("inbox", limit=200)["messages"]:
            if m["from"] == name and needle in m["body"]:
                return dict(m)
        return None

    return wait_for(found, timeout=60, what=f"{name}'s answer quoting {needle!r}")


def _all_cmdlines() -> list[bytes]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append((p / "cmdline").read_bytes())
            except OSError:
                continue
    return out


def _harness_argv(pid: int) -> list[str]:
    """The harness's own command line (`-m hyperhive harness`), in the tree below ``pid``."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            if argv[1:5] == [b"-I", b"-m", b"hyperhive", b"harness"]:
                return [a.decode() for a in argv if a]
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    raise AssertionError(f"no harness below {pid}")


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _no_secret_visible(hive: Hive, *names: str) -> None:
    """No process's command line, agent.json or actor name holds a live secret of ``names``."""
    secrets = AgentSecrets(hive.state_dir)
    seen = [*_all_cmdlines()]
    for n in names:
        seen += [(hive.paths.applied(AgentName(n)) / "agent.json").read_bytes(),
                 (hive.paths.config_dir(AgentName(n)) / "agent.json").read_bytes(),
                 actor_name(hive.paths, AgentName(n)).encode()]
    for blob in seen:
        for token in _SECRETISH.findall(blob):
            for n in names:
                assert not secrets.check(n, token.decode()), f"{n}'s secret is visible"


def test_a_placement_no_node_offers_is_refused_before_anything_is_made(rig: Rig) -> None:
    hive = rig.hive
    for resources, says in (("gpu_x=1", "unknown resource gpu_x"), ("pool=2", "no node of the Ray cluster can")):
        with pytest.raises(HiveError) as exc:
            hive.admin("spawn", name="bad", resources=resources)
        assert says in exc.value.message
    with pytest.raises(HiveError, match="--resources"):
        hive.admin("spawn", name="bad", resources="pool")
    assert "bad" not in hive.ls()
    assert not hive.paths.agent(AgentName("bad")).exists() and not hive.paths.applied(AgentName("bad")).exists()
    assert hive.admin("approvals")["pending"] == []


def test_an_agent_on_the_pool_runs_on_a_worker_and_answers_through_the_daemon(rig: Rig) -> None:
    hive = rig.hive
    c = _spawn(hive, "a", resources="pool=1")
    assert c["node"]["node_id"] in rig.worker_ids and c["node"]["address"]
    cfg = json.loads((hive.paths.applied(AgentName("a")) / "agent.json").read_text())
    assert cfg["placement"] == {"resources": {"pool": 1}}
    out = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    [row] = [r for r in json.loads(out.stdout) if r["name"] == "a"]
    assert row["node"] == c["node"]
    hive.admin("send", to="a", body="hello over tls")
    _reply_from(hive, "a", "hello over tls")
    # The harness uses the relay's sockets on its node, not the daemon's in agents/a/run.
    argv = _harness_argv(c["pid"])
    assert Path(_arg(argv, "--socket")).parent != hive.paths.run(AgentName("a"))
    _no_secret_visible(hive, "a", "m1nd")
    # Its web UI comes through its node: the daemon opens a connection the relay there parked.
    status, body = support.fetch(hive.agent_url("a") + "/events/history", headers=hive.bearer)
    assert status == 200 and b"hello over tls" in body
    assert any(e.get("event") == "agent_link.web_opened" and e.get("agent") == "a" for e in hive.log_events())
    status, body = hive.get("/metrics")
    assert status == 200
    assert f'hyperhive_node_agents{{node="{c["node"]["node_id"]}"}}'.encode() in body


def _listen_port(hive: Hive) -> int:
    return int((hive.state_dir / "run" / "agent-listen.port").read_text())


def _auth(hive: Hive, line: bytes) -> bytes:
    ca = (hive.state_dir / "tls" / "ca.pem").read_text()
    ctx: ssl.SSLContext = client_context(ca)
    with socket.create_connection(("127.0.0.1", _listen_port(hive)), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(line)
        got = b""
        while not got.endswith(b"\n"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def test_the_tcp_channel_takes_only_the_agents_own_secret_and_sends_come_from_itself(rig: Rig) -> None:
    hive = rig.hive
    c = wait_for(lambda: (row := hive.ls()["a"])["state"] == "running" and row, timeout=60, what="a running")
    assert json.loads(_auth(hive, b'{"op":"auth","agent":"a","channel":"hive"}\n'))["ok"] is False  # no secret
    for line in (auth_line("a", "x" * 43, "hive"), auth_line("m1nd", "y" * 43, "hive")):
        assert b"unauthorized" in _auth(hive, line)
    # The relay's socket on a's node: whatever a harness there sends, it sends as a.
    relay = Path(_arg(_harness_argv(c["pid"]), "--socket"))
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(relay))
        lines = s.makefile("rb")
        s.sendall(json.dumps({"op": "send", "to": "operator", "body": "forged from m1nd", "id": 1,
                              "from": "m1nd"}).encode() + b"\n")
        refused = json.loads(lines.readline())
        assert refused["ok"] is False and "from" in refused["error"]["message"]  # no "from" to claim
        s.sendall(json.dumps({"op": "send", "to": "operator", "body": "forged from m1nd", "id": 2}).encode() + b"\n")
        assert json.loads(lines.readline())["ok"] is True
    m = _reply_from(hive, "a", "forged from m1nd")
    assert m["from"] == "a"


def test_every_verb_on_a_ray_placed_agent(rig: Rig) -> None:
    hive = rig.hive
    first = _spawn(hive, "v", resources="pool=1")
    assert first["node"]["node_id"] in rig.worker_ids
    for verb, after in (("stop", "stopped"), ("start", "running"), ("restart", "running"), ("kill", "stopped"),
                        ("start", "running"), ("rebuild", "running")):
        hive.admin(verb, name="v")
        row = wait_for(lambda after=after: (r := hive.ls()["v"])["state"] == after and not r.get("transient") and r,
                       timeout=90, what=f"v {after} after {verb}")
        if after == "running":
            assert row["node"]["node_id"] in rig.worker_ids
            wait_for(lambda: hive.ls()["v"]["parked"]["system"] >= 1, timeout=60, what=f"v's harness after {verb}")
        else:
            assert "node" not in row
            with pytest.raises(ValueError):  # a stopped agent holds no actor (and no pool)
                ray.get_actor(actor_name(hive.paths, AgentName("v")), namespace=NAMESPACE)
    hive.admin("send", to="v", body="still there")
    _reply_from(hive, "v", "still there")
    # Another agent's secret gets nothing (v's, issued anew: v's own relay loses it, v goes next).
    v_secret = hive.admin("agent_link", name="v")["secret"]
    assert json.loads(_auth(hive, auth_line("v", v_secret, "hive"))) == {"ok": True}
    assert b"unauthorized" in _auth(hive, auth_line("a", v_secret, "hive"))
    hive.admin("destroy", name="v", purge=True, force=True)
    assert "v" not in hive.ls()
    assert b"unauthorized" in _auth(hive, auth_line("v", v_secret, "hive"))  # forgotten with it
    with pytest.raises(ValueError):
        ray.get_actor(actor_name(hive.paths, AgentName("v")), namespace=NAMESPACE)


def test_a_revive_and_its_approval_are_checked_against_the_cluster_as_it_is_then(rig: Rig) -> None:
    """The admin socket and the dashboard both recheck the kept placement when the operator
    revives, and again when the operator approves (hours may pass between the two)."""
    hive = rig.hive
    _spawn(hive, "r", resources="pool=1")
    hive.admin("destroy", name="r")  # a tombstone: its applied agent.json is kept
    applied = hive.paths.applied(AgentName("r"))
    kept = json.loads((applied / "agent.json").read_text())
    assert kept["placement"] == {"resources": {"pool": 1}}

    def keep(pool: int) -> None:  # as the cluster shrinking would: no node can hold it any more
        config_repo.write_applied({"agent.json": json.dumps({**kept, "placement": {"resources": {"pool": pool}}})},
                                  "by hand", applied)

    keep(2)
    with pytest.raises(HiveError, match=r"^r's kept agent.json: placement pool=2: no node"):
        hive.admin("revive", name="r")
    session = hive.session()
    status, body = session.post("/revive/r")
    assert status == 400 and b"kept agent.json: placement pool=2" in body
    assert hive.admin("approvals")["pending"] == []
    keep(1)
    aid = hive.admin("revive", name="r")["approval_id"]
    keep(2)
    with pytest.raises(HiveError, match=rf"^approval #{aid} \(revive of r\): its kept agent.json: placement pool=2"):
        hive.admin("approve", approval_id=aid)
    status, body = session.post(f"/approve/{aid}")
    assert status == 400 and b"stays pending" in body
    assert [a["id"] for a in hive.admin("approvals")["pending"]] == [aid] and "r" not in hive.ls()
    keep(1)
    assert hive.admin("approve", approval_id=aid)["approval"]["status"] == "approved"
    wait_for(lambda: hive.ls().get("r", {}).get("parked", {}).get("system", 0) >= 1, timeout=90, what="r revived")
    # A start is checked alike: its placement, as applied now, against the cluster now.
    hive.admin("stop", name="r")
    keep(2)
    with pytest.raises(HiveError, match=r"^r's agent.json \(start: nothing was started\): placement pool=2"):
        hive.admin("start", name="r")
    status, body = session.post("/restart/r")
    assert status == 400 and b"restart: nothing was started" in body
    assert hive.ls()["r"]["state"] == "stopped"
    hive.admin("destroy", name="r", purge=True, force=True)  # its pool back for the next test


def _crash_reports(hive: Hive) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{hive.paths.db}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT body FROM messages WHERE sender = 'system' AND recipient = 'm1nd'").fetchall()
    finally:
        db.close()
    out = []
    for (body,) in rows:
        try:
            payload = json.loads(body)
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("event") == "ContainerCrash":
            out.append(payload)
    return out


def test_a_lost_node_moves_the_agent_to_the_other_worker_with_its_state(rig: Rig) -> None:
    hive = rig.hive
    before = wait_for(lambda: (r := hive.ls()["a"])["state"] == "running" and r, timeout=60, what="a running")
    old = before["node"]
    events = hive.paths.state(AgentName("a")) / "hyperhive-events.sqlite"
    inode = os.stat(events).st_ino
    [node] = [w for w in rig.workers if w.node_id == old["node_id"]]
    rig.cluster.remove_node(node)
    hive.admin("send", to="a", body="while it was away")  # waits in the broker for the moved harness
    moved = wait_for(lambda: (r := hive.ls()["a"])["state"] == "running" and r.get("node")
                     and r["node"]["node_id"] != old["node_id"] and r["parked"]["system"] >= 1 and r,
                     timeout=150, what="a running on the other worker")
    assert moved["node"]["node_id"] in rig.worker_ids
    [crash] = wait_for(lambda: [p for p in _crash_reports(hive) if p["agent"] == "a"], timeout=30,
                       what="ContainerCrash for a")
    assert crash["reason"] == "node lost" and crash["node"]["node_id"] == old["node_id"]
    _reply_from(hive, "a", "while it was away")
    hive.admin("send", to="a", body="after the move")
    _reply_from(hive, "a", "after the move")
    # The builtin driver keeps no model conversation; its history is its events db in its
    # state dir (shared): the same file, used by the harness on the new node.
    argv = _harness_argv(moved["pid"])
    assert Path(_arg(argv, "--state-dir")) == hive.paths.state(AgentName("a"))
    assert os.stat(events).st_ino == inode
    db = sqlite3.connect(f"file:{events}?mode=ro", uri=True, timeout=10)
    try:
        text = " ".join(str(r) for r in db.execute("SELECT * FROM events").fetchall())
    finally:
        db.close()
    assert "hello over tls" in text and "after the move" in text


def _serve(state: Path, *args: str, env: dict[str, str] | None = None,
           pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{pre}from hyperhive.cli import main\nsys.exit(main())\n"
    return subprocess.run(
        [sys.executable, "-c", code, "--state-dir", str(state), "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("HYPERHIVE_", "RAY_ADDRESS"))},
             **(env or {}), **RAY_ENV})


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hive: "), r.stderr
    return lines[0]


def test_serve_refuses_in_one_line_an_unreachable_cluster_no_listener_and_no_ray(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens there once closed
    line = _one_line(_serve(tmp_path / "s1", "--backend", "ray", "--ray-address", f"127.0.0.1:{dead}",
                            "--agent-listen", "127.0.0.1:0"))
    assert "cannot reach the Ray cluster" in line
    line = _one_line(_serve(tmp_path / "s2", "--backend", "ray"))
    assert "--agent-listen" in line
    line = _one_line(_serve(tmp_path / "s3", "--backend", "ray", "--agent-listen", "127.0.0.1:0",
                            pre="sys.modules['ray'] = None\n"))
    assert "pip install 'hyperhive[ray]'" in line
    assert not (tmp_path / "s3").exists()
