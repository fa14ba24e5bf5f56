"""Attacks from inside a Ray-placed agent's sandbox (issue 18): its relay's sockets and what they tunnel to.

A real cluster (a head with no CPUs, two workers offering ``pool: 1``), a real root daemon with
``--backend ray --agent-listen``, two builtin agents ``a`` and ``b`` (one per worker). Every attack runs
in a process entered into ``a``'s harness's namespaces as its uid (what its Bash tool would see).
The relay (`hyperhive.agent_link.AgentLink`) runs outside, in the Ray actor's worker process.
"""

from __future__ import annotations

import json
import os
import re
import secrets as pysecrets
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from support import Hive, wait_for
from test_sandbox import connect_tcp, connect_unix, harness_pid, nsenter_cmd, py

ray = pytest.importorskip("ray")

from ray_support import ray_hive  # noqa: E402

from hyperhive.agent_link import MAX_CONNECTIONS as RELAY_MAX  # noqa: E402
from hyperhive.agent_secrets import AgentSecrets  # noqa: E402
from hyperhive.names import AgentName  # noqa: E402
from hyperhive.sandbox.view import runtime_dirs  # noqa: E402
from hyperhive.web.rpc.mcp_sockets import MAX_CONNECTIONS as DAEMON_MCP_MAX  # noqa: E402
from hyperhive.web.rpc.sockets import MAX_CONNECTIONS as DAEMON_HIVE_MAX  # noqa: E402

pytestmark = [
    pytest.mark.e2e, pytest.mark.ray,
    pytest.mark.skipif(os.geteuid() != 0, reason="the production case: a root daemon"),
    pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("nsenter") is None,
                       reason="needs bubblewrap and nsenter (.ci/run installs them)"),
]



@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    support.require_e2e("a Ray cluster and a daemon on it")
    with ray_hive(tmp_path_factory.mktemp("rayhostile"), ["--agent-memory-mb", "512", "--sandbox", "on"],
                  destroy=("a", "b")) as (_cluster, _workers, h):
        for name in ("a", "b"):
            h.admin("spawn", name=name, resources="pool=1")
        for name in ("a", "b"):
            wait_for(lambda name=name: h.ls()[name]["parked"]["system"] >= 1, timeout=120,  # type: ignore[misc]
                     what=f"{name}'s harness on its node")
        yield h


def _harness_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def relay_dir(h: Hive, agent: str) -> Path:
    argv = _harness_argv(harness_pid(h, agent))
    return Path(argv[argv.index("--socket") + 1]).parent


def inside(h: Hive, cmd: str, agent: str = "a") -> str:
    status, out = nsenter_cmd(h, agent, cmd)
    return out


def reply_from(h: Hive, name: str, needle: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for m in h.admin("inbox", limit=300)["messages"]:
            if needle in m["body"]:
                return dict(m)
        return None

    return wait_for(found, timeout=timeout, what=f"a message with {needle!r}")


def test_it_reaches_only_its_own_relay_sockets(hive: Hive) -> None:
    mine, theirs = relay_dir(hive, "a"), relay_dir(hive, "b")
    assert mine != theirs and mine.parent == theirs.parent
    # The harness runs in its own namespaces (sandboxed), not the daemon's.
    pid = harness_pid(hive, "a")
    for ns in ("net", "pid", "mnt"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    out = inside(hive, f"ls -A {mine.parent}")
    assert out.split() == [mine.name], out  # the other agents' relay dirs are not in its view
    for sock in ("hive.sock", "mcp.sock", "api.sock", "proxy.sock"):
        assert "CONNECTED" in inside(hive, connect_unix(str(mine / sock))), sock
        assert "ERRNO 2 FileNotFoundError" in inside(hive, connect_unix(str(theirs / sock))), sock
    # On the host, each relay's sockets are its own agent's alone (0600): a view would not be enough.
    for sock in ("hive.sock", "mcp.sock", "api.sock", "proxy.sock"):
        ours, other = os.lstat(mine / sock), os.lstat(theirs / sock)
        assert stat.S_IMODE(ours.st_mode) == stat.S_IMODE(other.st_mode) == 0o600
        assert ours.st_uid != other.st_uid and 0 not in (ours.st_uid, other.st_uid)
    for agent in ("a", "b", "m1nd"):  # the daemon's own sockets on the shared agents dir
        for sock in (hive.paths.socket(AgentName(agent)), hive.paths.mcp_socket(AgentName(agent))):
            assert "ERRNO 2 FileNotFoundError" in inside(hive, connect_unix(str(sock))), sock
    assert "ERRNO 2 FileNotFoundError" in inside(hive, connect_unix(str(hive.paths.admin_socket)))
    port = int((hive.state_dir / "run" / "agent-listen.port").read_text())
    assert "ERRNO 111 ConnectionRefusedError" in inside(hive, connect_tcp("127.0.0.1", port))
    assert "ERRNO 101" in inside(hive, connect_tcp("10.0.0.1", port))  # no route out: only its loopback
    ifaces = {line.split(":")[0].strip() for line in inside(hive, "cat /proc/net/dev").splitlines() if ":" in line}
    assert ifaces == {"lo"}


_FLOOD = r'''
import json, socket
run = RUN
def conn(name, t=15):
    s = socket.socket(socket.AF_UNIX); s.settimeout(t); s.connect(run + "/" + name); return s
def answer(s):
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            c = s.recv(65536)
            if not c:
                return buf.decode(errors="replace") or "EOF"
            buf += c
    except OSError as e:
        return "ERR " + type(e).__name__
    return buf.decode(errors="replace")
def one(name, data):
    s = conn(name)
    try:
        s.sendall(data)
    except OSError as e:
        s.close(); return "SENDERR " + type(e).__name__
    a = answer(s); s.close(); return a[:300]
INIT = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                  "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}).encode() + b"\n"
out = {}
for name in ("hive.sock", "mcp.sock"):
    r = {}
    r["garbage"] = one(name, b"garbage \x00\xff\n")
    r["big"] = one(name, b'{"op":"send","to":"operator","body":"' + b"A" * (9 << 20) + b'"}\n')
    r["surrogate"] = one(name, b'{"op":"send","to":"operator","body":"\\udc00 lone","id":3}\n')
    r["raw_surrogate"] = one(name, b'{"op":"send","to":"operator","body":"\xed\xb3\x80 raw","id":4}\n')
    held, errors = [], []
    for i in range(200):
        try:
            held.append(conn(name))
        except OSError as e:
            errors.append(type(e).__name__)
    probe = b'{"id":9,"op":"ping"}\n' if name == "hive.sock" else INIT
    for s in held:
        try:
            s.sendall(probe)
        except OSError:
            pass
    answers = [answer(s) for s in held]
    r["answered"] = sum(1 for a in answers if a.startswith("{") and '"error"' not in a)
    r["refused"] = sum(1 for a in answers if not a.startswith("{") or '"error"' in a)
    r["connect_errors"] = len(errors)
    r["connect_error_kinds"] = sorted(set(errors))
    for s in held:
        s.close()
    out[name] = r
print("RESULT " + json.dumps(out))
'''


def _json_lines(paths: Iterator[Path]) -> Iterator[dict[str, Any]]:
    for p in paths:
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def test_garbage_huge_lines_surrogates_and_a_flood_end_only_themselves(hive: Hive) -> None:
    run = relay_dir(hive, "a")
    before = {n: harness_pid(hive, n) for n in ("a", "b")}
    out = inside(hive, py(_FLOOD.replace("RUN", repr(str(run)))))
    [line] = [x for x in out.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line[7:])
    for name, cap in (("hive.sock", DAEMON_HIVE_MAX), ("mcp.sock", DAEMON_MCP_MAX)):
        r = got[name]
        for attack in ("garbage", "big", "surrogate", "raw_surrogate"):
            # an error line or the end of that connection: never a send
            assert '"ok": true' not in r[attack] and '"ok":true' not in r[attack], (name, attack, r[attack])
        assert r["answered"] + r["refused"] + r["connect_errors"] == 200, (name, r)
        # a full backlog refuses a connect at once (the client's own, never a hang)
        assert set(r["connect_error_kinds"]) <= {"BlockingIOError", "ConnectionRefusedError"}, r
        assert 1 <= r["answered"] <= min(RELAY_MAX, cap), (name, r)  # the caps held, and served some
    # Nothing got through as a message; everyone is still up; the others still answer.
    assert not [m for m in hive.admin("inbox", limit=300)["messages"] if "lone" in m["body"] or "raw" in m["body"]
                or m["body"].startswith("AAAA")]
    assert {n: harness_pid(hive, n) for n in ("a", "b")} == before
    # The relay's cap refused the excess on its node, the daemon's its own beyond (mcp: 8 a agent).
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    wait_for(lambda: any(e.get("event") == "agent_link.too_many_connections" and e.get("agent") == "a"
                         for e in _json_lines(logs.glob("worker-*.err"))), timeout=20, what="the relay's cap")
    wait_for(lambda: any(e.get("event") == "agent_link.refused" and e.get("reason") == "cap" and e.get("agent") == "a"
                         for e in hive.log_events()), timeout=20, what="the daemon's cap")
    token = uuid.uuid4().hex[:8]
    hive.admin("send", to="b", body=f"b still there {token}")
    assert reply_from(hive, "b", f"b still there {token}")["from"] == "b"
    # a's own later send, from inside, arrives (its relay serves it again).
    line = json.dumps({"op": "send", "to": "operator", "body": f"after the flood {token}", "id": 1}) + "\n"
    send = py(f"import socket\ns = socket.socket(socket.AF_UNIX); s.settimeout(20)\n"
              f"s.connect({str(run / 'hive.sock')!r}); s.sendall({line.encode()!r})\n"
              f"print(s.makefile('rb').readline().decode())")
    assert '"ok": true' in inside(hive, send).replace('"ok":true', '"ok": true')
    assert reply_from(hive, "a", f"after the flood {token}")["from"] == "a"
    wait_for(lambda: hive.ls()["a"]["parked"]["system"] >= 1, timeout=30, what="a's harness parked again")


_FORGE = r'''
import json, socket
run = RUN
def lines(name):
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(run + "/" + name); return s, s.makefile("rb")
s, f = lines("hive.sock")
res = []
for i, extra in enumerate(({"from": "b"}, {"sender": "b"}, {"from": "operator", "sender": "m1nd"})):
    req = {"op": "send", "to": "operator", "body": "forged TOKEN %d" % i, "id": i, **extra}
    s.sendall(json.dumps(req).encode() + b"\n")
    res.append(f.readline().decode().strip())
s, f = lines("mcp.sock")
def rpc(msg):
    s.sendall(json.dumps(msg).encode() + b"\n")
    if "id" in msg:
        return f.readline().decode().strip()
rpc({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
     "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})
rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
res.append(rpc({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "send", "arguments":
     {"to": "operator", "body": "forged TOKEN mcp", "from": "b", "sender": "b"}}}))
res.append(rpc({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "send", "arguments":
     {"to": "operator", "body": "as me TOKEN mcp"}}}))
print("RESULT " + json.dumps(res))
'''


def test_a_send_claiming_another_sender_arrives_as_itself_or_not_at_all(hive: Hive) -> None:
    token = uuid.uuid4().hex[:8]
    code = _FORGE.replace("RUN", repr(str(relay_dir(hive, "a")))).replace("TOKEN", token)
    out = inside(hive, py(code))
    [line] = [x for x in out.splitlines() if x.startswith("RESULT ")]
    answers = json.loads(line[7:])
    assert len(answers) == 5 and all(answers), answers
    for answer in answers[:3]:  # a "from" or a "sender" is refused outright on hive.sock
        assert json.loads(answer)["ok"] is False
    forged = json.loads(answers[3])["result"]  # and by the MCP tool, naming both
    assert forged["isError"] is True and "'from'" in forged["content"][0]["text"]
    assert "'sender'" in forged["content"][0]["text"]
    reply_from(hive, "a", f"as me {token} mcp")  # the plain MCP send went, as a
    assert not [m for m in hive.admin("inbox", limit=300)["messages"] if f"forged {token}" in m["body"]]


_SECRETS_SCAN = r'''
import os, re
tok = re.compile(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
skip = SKIP
found, files, procs = set(), 0, []
for p in os.listdir("/proc"):
    if p.isdigit():
        for leaf in ("environ", "cmdline"):
            try:
                data = open("/proc/%s/%s" % (p, leaf), "rb").read()
            except OSError:
                continue
            found.update(tok.findall(data))
            if leaf == "cmdline":
                procs.append(data.replace(b"\0", b" ").decode(errors="replace")[:200])
for top, dirs, names in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip and not os.path.islink(os.path.join(top, d))]
    for n in names:
        path = os.path.join(top, n)
        files += 1
        if files > 200000:
            break
        try:
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > (16 << 20):
                continue
            found.update(tok.findall(open(path, "rb").read()))
        except OSError:
            continue
print("PROCS", len(procs))
for c in procs:
    print("PROC", c)
print("FILES", files)
for t in sorted(found):
    print("TOKEN", t.decode())
'''


def test_it_cannot_read_its_relays_secret_anywhere(hive: Hive) -> None:
    canary = pysecrets.token_urlsafe(32)  # the secret's shape, where the agent can read: the scan must see it
    (hive.paths.state(AgentName("a")) / "canary.txt").write_text(f"x={canary}\n")
    skip = {"/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/nix"} | set(runtime_dirs())
    out = inside(hive, py(_SECRETS_SCAN.replace("SKIP", repr(skip))))
    lines = out.splitlines()
    assert any(x.startswith("FILES ") and int(x.split()[1]) > 10 for x in lines), out[-2000:]  # it did walk
    procs = [x[5:] for x in lines if x.startswith("PROC ")]
    assert procs and any("hyperhive harness" in c for c in procs), procs  # it did read /proc
    # The relay (the Ray worker's process) and Ray's own are outside its pid namespace.
    assert not [c for c in procs if re.search(r"ray::|default_worker|raylet|gcs_server|\bray\b", c)], procs
    tokens = [x[6:] for x in lines if x.startswith("TOKEN ")]
    assert canary in tokens, len(tokens)
    secrets = AgentSecrets(hive.state_dir)
    assert secrets.knows("a")
    for t in tokens:
        for agent in ("a", "b", "m1nd"):
            assert not secrets.check(agent, t), f"{agent}'s secret is readable inside a's sandbox"
    # On the host: the bwrap top's parent is the Ray worker holding the relay; another pid namespace.
    top = hive.ls()["a"]["pid"]
    worker = int(Path(f"/proc/{top}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"ray" in Path(f"/proc/{worker}/cmdline").read_bytes().lower()
    assert os.readlink(f"/proc/{worker}/ns/pid") != os.readlink(f"/proc/{harness_pid(hive, 'a')}/ns/pid")
