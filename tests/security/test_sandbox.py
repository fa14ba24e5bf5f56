"""Attacks from inside a real agent's sandbox (issue 11, acceptance 1–2).

Every attack runs two ways, as a hostile agent with a shell would run it:
- ``run``: the builtin driver's `run <command>`, sent by the operator, runs
  it with `sh -c` inside the agent's sandbox (the agent's own tool path);
- ``nsenter``: a process entered into the running harness's namespaces
  (`nsenter --target <harness pid> --all`, then the agent's uid), which is
  what its Bash tool would see.
Each test asserts the specific failure, not just a non-zero exit.

The daemon runs as root (the production case) with fake credentials in its
environment, and the test holds servers on the host's loopback and a unix
socket under /run that nothing inside may reach.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import socket
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the production case: a root daemon"),
    pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("nsenter") is None,
                       reason="needs bubblewrap and nsenter (.ci/run installs them)"),
]

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-daemon-secret-7f3a9c",
    "GITHUB_TOKEN": "ghp_daemonsecret4b8e21",
    "AWS_SECRET_ACCESS_KEY": "aws-daemon-secret-90c1d2",
}
ALLOWED = "pkgs.hive.test"
VIA = ("run", "nsenter")


# --- host-side servers nothing inside may reach (and one it may, through the proxy) ---

class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"hello from the host, path {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host_http() -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hello)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def run_socket() -> Iterator[Path]:
    path = Path(f"/run/hyperhive-test-{uuid.uuid4().hex[:8]}.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        s.close()
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, host_http: int) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("sandbox") / "state", env=SECRETS,
             extra_args=["--sandbox", "on", "--proxy-resolve", f"{ALLOWED}:{host_http}=127.0.0.1",
                         "--vacuum-interval-seconds", "1"]).start()
    try:
        for name in ("alice", "bob"):
            h.spawn(name)
        apply_config(h, "alice", {"network": {"allow": [ALLOWED]},  # any port: the mapping names one
                                  "limits": {"memory_mb": 256, "pids": 64}})
        yield h
    finally:
        h.stop()


def apply_config(h: Hive, agent: str, agent_json: dict[str, Any]) -> None:
    """The operator's path: m1nd proposes the config, the operator approves, the agent is rebuilt."""
    approval = manager_request(h, "propose_config", agent=agent, message="limits", agent_json=json.dumps(agent_json))
    restarts = h.ls()[agent]["restarts"]
    h.admin("approve", approval_id=approval["approval_id"])
    wait_for(lambda: h.ls()[agent]["state"] == "running" and h.ls()[agent]["parked"]["system"] >= 1
             and h.ls()[agent]["restarts"] >= restarts, timeout=60, what=f"{agent} rebuilt")


def manager_request(h: Hive, op: str, **fields: Any) -> dict[str, Any]:
    """A request on m1nd's own socket (as its tools make them)."""
    import asyncio

    from hyperhive.client import AsyncClient

    async def go() -> dict[str, Any]:
        c = AsyncClient(h.socket("m1nd"))
        try:
            return await c.request(op, **fields)
        finally:
            await c.close()

    return asyncio.run(go())


# --- ways in --------------------------------------------------------------------

def run_cmd(h: Hive, agent: str, cmd: str, timeout: float = 60) -> tuple[str, str]:
    """`run` through the builtin driver: (status text, output)."""
    token = uuid.uuid4().hex[:10]
    h.admin("send", to=agent, body=f"run echo {token}; {cmd}")

    def reply() -> str | None:
        for m in h.admin("inbox", limit=200)["messages"]:
            if m["from"] == agent and f"\n{token}" in m["body"] and "] run: " in m["body"]:
                return str(m["body"])
        return None

    body = wait_for(reply, timeout=timeout, what=f"{agent}'s run reply")
    head, _, out = body.partition("\n")
    return head.split("] run: ", 1)[1], out.split(token + "\n", 1)[1] if token + "\n" in out else out


def harness_pid(h: Hive, agent: str) -> int:
    """The harness process inside the agent's sandbox (a descendant of bwrap)."""
    top = h.ls()[agent]["pid"]

    def children(pid: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
        return out

    todo = children(top)
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:5] == [b"-I", b"-m", b"hyperhive", b"harness"]:
            return pid
        todo += children(pid)
    raise AssertionError(f"no harness under pid {top}")


def nsenter_cmd(h: Hive, agent: str, cmd: str) -> tuple[str, str]:
    """Enter the harness's namespaces as its uid, after joining its cgroups (where
    everything the agent runs lives, so its limits hold for this process too)."""
    pid = harness_pid(h, agent)
    procs = [f"/sys/fs/cgroup/{ctl}{path}/cgroup.procs" for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
             for _, ctl, path in [line.split(":", 2)] if ctl in ("memory", "pids", "")]
    procs = [p.replace("/sys/fs/cgroup//", "/sys/fs/cgroup/") for p in procs if os.path.exists(p)]
    join = "".join(f"echo $$ > {shlex.quote(p)} && " for p in procs)
    r = subprocess.run(
        ["sh", "-c", f'{join}exec nsenter --target {pid} --all --setuid 1000 --setgid 1000 sh -c "$0"', cmd],
        capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, cwd="/",
    )
    status = f"exit {r.returncode}" if r.returncode >= 0 else f"killed by signal {-r.returncode}"
    return status, (r.stdout + r.stderr).decode(errors="replace")


def inside(h: Hive, via: str, cmd: str, agent: str = "alice") -> tuple[str, str]:
    return run_cmd(h, agent, cmd) if via == "run" else nsenter_cmd(h, agent, cmd)


PY = "python3 -c"  # the interpreter is in the view; its socket module gives exact errnos


def py(code: str) -> str:
    return f"{PY} {shlex.quote(code)}"


def connect_tcp(host: str, port: int) -> str:
    return py(f"import socket\ntry:\n socket.create_connection(({host!r}, {port}), timeout=5)\n print('CONNECTED')\n"
              f"except OSError as e:\n print('ERRNO', e.errno, type(e).__name__)")


def connect_unix(path: str) -> str:
    return py(f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n s.connect({path!r})\n print('CONNECTED')\n"
              f"except OSError as e:\n print('ERRNO', e.errno, type(e).__name__)")


# --- 1. the network ---------------------------------------------------------------

@pytest.mark.parametrize("via", VIA)
def test_no_host_loopback_no_dashboard_no_other_agent(hive: Hive, via: str, host_http: int) -> None:
    dash = int(hive.url.rsplit(":", 1)[1])
    bob_port = int((hive.paths.agent("bob") / "port").read_text())
    for host, port in (("127.0.0.1", dash), ("127.0.0.2", dash), ("127.0.0.1", bob_port),
                       ("127.0.0.1", host_http), ("127.0.0.9", host_http)):
        status, out = inside(hive, via, connect_tcp(host, port))
        assert "ERRNO 111 ConnectionRefusedError" in out, (host, port, status, out)
    # Only its own loopback exists: no route to any other address.
    status, out = inside(hive, via, connect_tcp("10.0.0.1", 80))
    assert "ERRNO 101" in out, out  # ENETUNREACH
    status, out = inside(hive, via, "cat /proc/net/dev")
    ifaces = {line.split(":")[0].strip() for line in out.splitlines() if ":" in line}
    assert ifaces == {"lo"}, out


# --- 2. files ---------------------------------------------------------------------

@pytest.mark.parametrize("via", VIA)
def test_nothing_of_the_host_is_readable(hive: Hive, via: str) -> None:
    bob_state = hive.paths.state("bob")  # type: ignore[arg-type]
    for path in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/root/.ssh", "/root/.claude", "/root/.bashrc",
                 "/home", "/var", "/srv", "/mnt", "/run",
                 str(hive.paths.db), str(bob_state), str(hive.paths.agents / "bob"),
                 str(hive.paths.admin_socket), str(Path.cwd() / "tests")):
        status, out = inside(hive, via, f"ls -d {path}; cat {path} 2>&1 | head -c 100")
        assert "No such file or directory" in out, (path, out)
    # /root exists only where the interpreter lives under it (pyenv): nothing else of it is there.
    from hyperhive.sandbox.view import runtime_dirs
    allowed = {Path(d).relative_to("/root").parts[0] for d in runtime_dirs() if d.startswith("/root/")}
    status, out = inside(hive, via, "ls -A /root 2>&1")
    assert set(out.split()) <= allowed or "No such file or directory" in out, out
    status, out = inside(hive, via, "cat /etc/passwd")
    assert "root:x:0:0" in out and "agent:x:1000" in out and len(out.splitlines()) == 3, out


@pytest.mark.parametrize("via", VIA)
def test_no_admin_socket_no_run_socket(hive: Hive, via: str, run_socket: Path) -> None:
    for path in (hive.paths.admin_socket, run_socket):
        status, out = inside(hive, via, connect_unix(str(path)))
        assert "ERRNO 2 FileNotFoundError" in out, (path, out)


@pytest.mark.parametrize("via", VIA)
def test_no_daemon_credential_anywhere(hive: Hive, via: str) -> None:
    status, out = inside(hive, via, "cat /proc/self/environ /proc/1/environ /proc/*/environ 2>/dev/null"
                                    " | tr '\\0' '\\n'")
    assert "HOME=" in out, out  # it did read them
    for name, secret in SECRETS.items():
        assert secret not in out, name
    assert "ANTHROPIC_API_KEY=hyperhive-gateway-placeholder" in out  # what the agent holds instead
    # The pattern must not hold the secrets literally: the agent's own events db records this command.
    pattern = "|".join(f"{v[:-1]}[{v[-1]}]" for v in SECRETS.values())
    status, out = inside(hive, via, f"grep -rlsE '{pattern}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev;"
                                    " echo grep-exit=$?")
    assert out.strip().splitlines() in (["grep-exit=1"], ["grep-exit=2"]), out  # no file matched anywhere readable


@pytest.mark.parametrize("via", VIA)
def test_writes_only_in_its_state_dir_and_workspace(hive: Hive, via: str) -> None:
    state, work = hive.paths.state("alice"), hive.paths.workspace("alice")  # type: ignore[arg-type]
    applied, run = hive.paths.applied("alice"), hive.paths.run("alice")  # type: ignore[arg-type]
    tag = uuid.uuid4().hex[:8]
    for target in ("/x", "/etc/x", "/usr/x", f"{applied}/x", f"{run}/x"):
        status, out = inside(hive, via, f"echo pwned > {target}-{tag}; echo rc=$?")
        assert "Read-only file system" in out and "rc=0" not in out, (target, out)
    # Beside its own dirs, a write lands at most in the sandbox's private /tmp (the state dir may sit under /tmp).
    for target in (f"{hive.paths.agent('alice')}/x", f"{hive.paths.root}/x", f"{hive.paths.agents}/bob/x"):  # type: ignore[arg-type]
        inside(hive, via, f"echo pwned > {target}-{tag}; echo rc=$?")
        assert not Path(f"{target}-{tag}").exists(), target
    status, out = inside(hive, via, f"echo ok > {state}/w-{tag} && echo ok > {work}/w-{tag} && echo ok > /tmp/t-{tag}"
                                    " && echo wrote")
    assert "wrote" in out, out
    assert (state / f"w-{tag}").read_text() == "ok\n" and (work / f"w-{tag}").read_text() == "ok\n"
    assert not Path(f"/tmp/t-{tag}").exists()  # its /tmp is its own
    uid = int((hive.paths.agent("alice") / "uid").read_text())  # type: ignore[arg-type]
    assert (state / f"w-{tag}").stat().st_uid == uid != 0  # its files are its own uid's on the host


# --- 3. privileges ------------------------------------------------------------------

@pytest.mark.parametrize("via", VIA)
def test_no_capability_and_mounts_hold(hive: Hive, via: str) -> None:
    status, out = inside(hive, via, "id -u; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status")
    lines = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert out.splitlines()[0] == "1000"
    caps = ("CapInh", "CapPrm", "CapEff", "CapAmb") + (("CapBnd",) if via == "run" else ())
    assert {k: lines[k] for k in caps} == dict.fromkeys(caps, "0000000000000000"), out
    if via == "run":  # what the agent's own tools inherit; an nsenter'd process keeps the host's bounding set
        assert lines["NoNewPrivs"] == "1"
    status, out = inside(hive, via, "unshare -m sh -c 'umount -l /tmp && echo lifted' 2>&1; echo rc=$?")
    assert "lifted" not in out and "Operation not permitted" in out, out
    status, out = inside(hive, via, "unshare -Urm sh -c 'umount -l /tmp && echo lifted' 2>&1; echo rc=$?")
    assert "lifted" not in out, out
    if via == "run":  # no nested user namespace: no "fake root" with capabilities (the agent's own tools)
        status, out = inside(hive, via, "unshare -U true 2>&1; echo rc=$?")
        assert "rc=0" not in out and ("No space left on device" in out or "not permitted" in out), out


# --- 4. the daemon never follows the agent's links -----------------------------------

def test_a_symlinked_harness_log_is_never_opened(hive: Hive, tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("host content\n")
    state = hive.paths.state("alice")  # type: ignore[arg-type]
    restarts = hive.ls()["alice"]["restarts"]
    run_cmd(hive, "alice", f"ln -sf {target} {state}/harness.log && echo linked")
    # The agent kills its own harness: the automatic restart opens the daemon's log, not the link.
    hive.admin("send", to="alice", body="run kill -9 $PPID")
    wait_for(lambda: hive.ls()["alice"]["restarts"] > restarts and hive.ls()["alice"]["state"] == "running"
             and hive.ls()["alice"]["parked"]["system"] >= 1, timeout=60, what="alice restarted")
    run_cmd(hive, "alice", "echo after-restart")
    assert target.read_text() == "host content\n"
    journal = hive.admin("journal", name="alice", unit="harness", lines=500)["text"]
    assert "host content" not in journal and "harness" in journal


def test_a_symlinked_events_db_is_never_opened_by_the_daemon(hive: Hive, tmp_path: Path) -> None:
    target = tmp_path / "host-db"
    target.write_bytes(b"not a database\n")
    state = hive.paths.state("bob")  # type: ignore[arg-type]
    for suffix in ("-wal", "-shm", "-journal"):
        os.symlink(tmp_path / f"host-db{suffix}", state / f"hyperhive-events.sqlite{suffix}.planted")
    run_cmd(hive, "bob", f"for s in -wal -shm -journal; do ln -sf {target}$s {state}/planted$s; done; "
                          f"mv {state}/hyperhive-events.sqlite {state}/moved.sqlite; "
                          f"ln -s {target} {state}/hyperhive-events.sqlite; echo planted")
    def sweeps() -> int:
        return len([e for e in hive.log_events() if e.get("event") == "vacuum.swept"])

    seen = sweeps()
    wait_for(lambda: sweeps() >= seen + 2, timeout=15, what="two vacuum sweeps after the links were planted")
    assert target.read_bytes() == b"not a database\n"
    assert not any((tmp_path / f"host-db{s}").exists() for s in ("-wal", "-shm", "-journal"))


def test_a_symlinked_login_is_not_a_login(hive: Hive, tmp_path: Path) -> None:
    """A kept state's `credentials_kept` (the login check) never follows `.claude`."""
    creds = tmp_path / "root-claude"
    creds.mkdir()
    (creds / ".credentials.json").write_text("{}")
    hive.spawn("carol")
    state = hive.paths.state("carol")  # type: ignore[arg-type]
    run_cmd(hive, "carol", f"rm -rf {state}/.claude; ln -s {creds} {state}/.claude; echo linked")
    hive.admin("destroy", name="carol")
    tomb = {t["name"]: t for t in hive.admin("tombstones")["tombstones"]}
    assert tomb["carol"]["credentials_kept"] is False
    (state / ".claude").unlink()
    os.symlink(creds / ".credentials.json", state / ".claude")  # the file itself as the link: no login either
    tomb = {t["name"]: t for t in hive.admin("tombstones")["tombstones"]}
    assert tomb["carol"]["credentials_kept"] is False
    hive.admin("purge", name="carol")
    assert creds.is_dir() and (creds / ".credentials.json").read_text() == "{}"  # purge never followed the link


def test_a_symlinked_web_socket_is_never_connected(hive: Hive, run_socket: Path) -> None:
    state = hive.paths.state("bob")  # type: ignore[arg-type]
    port = int((hive.paths.agent("bob") / "port").read_text())  # type: ignore[arg-type]
    run_cmd(hive, "bob", f"rm -f {state}/web.sock; ln -s {run_socket} {state}/web.sock; echo linked")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        # As the operator (issue 12: the relay connects only for a request it lets through).
        s.sendall(f"GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {hive.token}\r\n\r\n".encode())
        assert s.recv(100) == b""  # closed: the link was refused, never followed
    except ConnectionResetError:
        pass
    finally:
        s.close()
    failed = wait_for(lambda: [e for e in hive.log_events() if e.get("event") == "relay.connect_failed"
                               and "bob" in str(e.get("name"))], timeout=10, what="the refusal logged")
    assert "link" in failed[-1]["error"] or "socket" in failed[-1]["error"], failed[-1]


def test_the_harness_log_cannot_be_truncated_from_inside(hive: Hive) -> None:
    """The harness's stdout is a pipe the daemon copies into its own log: a
    process of the agent's that takes it (its uid may open /proc/<harness>/fd/1)
    can add lines, never rewrite or shorten what is there."""
    log = hive.paths.harness_log("alice")  # type: ignore[arg-type]
    before = log.stat().st_size
    assert before > 0
    status, out = run_cmd(hive, "alice", py(
        "import os\nfd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
        "try:\n os.ftruncate(fd, 0)\n print('TRUNCATED')\nexcept OSError as e:\n print('ERRNO', e.errno)\n"
        "os.write(fd, b'forged line\\n')"))
    assert "TRUNCATED" not in out and "ERRNO 22" in out, out  # EINVAL: a pipe has no length
    assert log.stat().st_size >= before


def test_connections_past_the_cap_are_closed_and_the_daemon_still_answers(hive: Hive) -> None:
    sock = hive.socket("alice")
    status, out = run_cmd(hive, "alice", py(
        "import socket, time\nconns = []\n"
        f"for _ in range(200):\n s = socket.socket(socket.AF_UNIX)\n s.connect({str(sock)!r})\n conns.append(s)\n"
        "time.sleep(0.5)\nclosed = 0\nfor s in conns:\n s.setblocking(False)\n try:\n  closed += s.recv(1) == b''\n"
        " except BlockingIOError:\n  pass\nprint('CLOSED', closed)\nprint('LS-DURING-OK')"))
    closed = int(out.split("CLOSED ")[1].split()[0])
    assert closed >= 200 - 32, out  # at most the cap stays open
    assert hive.ls()["alice"]["state"] == "running"


# --- 5. limits --------------------------------------------------------------------

@pytest.mark.parametrize("via", VIA)
def test_its_pids_limit_holds(hive: Hive, via: str) -> None:
    status, out = inside(hive, via, "for i in $(seq 1 100); do sleep 30 & done 2>&1 | tail -n 2; "
                                    "cat /proc/loadavg >/dev/null; kill $(jobs -p) 2>/dev/null; echo done")
    assert "fork" in out.lower() or "resource temporarily unavailable" in out.lower(), out
    usage = hive.ls()["alice"].get("usage") or {}
    assert usage.get("pids") is None or usage["pids"] <= 64


def test_its_memory_limit_kills_the_container_and_m1nd_hears_out_of_memory(hive: Hive) -> None:
    restarts = hive.ls()["alice"]["restarts"]
    hive.admin("send", to="alice", body="run python3 -c 'b = bytearray(400 << 20); import time; time.sleep(30)'")

    def crash() -> dict[str, Any] | None:
        rows = [json.loads(r["body"]) for r in _m1nd_inbox(hive) if '"ContainerCrash"' in r["body"]]
        return next((r for r in rows if r["agent"] == "alice" and r.get("reason") == "out of memory"), None)

    event = wait_for(crash, timeout=60, what="ContainerCrash out of memory")
    assert event["reason"] == "out of memory"
    wait_for(lambda: hive.ls()["alice"]["restarts"] > restarts and hive.ls()["alice"]["state"] == "running",
             timeout=60, what="alice restarted after the OOM")
    assert "out of memory" in (hive.ls()["alice"]["last_exit"] or "")


def _m1nd_inbox(hive: Hive) -> list[dict[str, Any]]:
    from hyperhive.store.models import Message, open_hive_db

    db = open_hive_db(hive.paths.db)
    try:
        return [{"from": m.sender, "body": m.body} for m in Message.select().where(Message.recipient == "m1nd")]
    finally:
        db.close()


# --- what must still work ------------------------------------------------------------

def test_an_allowlisted_host_is_reached_through_the_proxy(hive: Hive, host_http: int) -> None:
    status, out = run_cmd(hive, "alice", f"curl -sS http://{ALLOWED}:{host_http}/through-proxy")
    assert "hello from the host, path /through-proxy" in out, out


def test_a_host_not_on_the_list_is_refused_logged_and_counted(hive: Hive, host_http: int) -> None:
    status, out = run_cmd(hive, "alice", f"curl -sS -o /dev/null -w '%{{http_code}}' http://other.hive.test:{host_http}/")
    assert out.strip().endswith("403"), out
    status, out = run_cmd(hive, "bob", f"curl -sS -o /dev/null -w '%{{http_code}}' http://{ALLOWED}:{host_http}/")
    assert out.strip().endswith("403"), out  # bob's list is empty
    refused = wait_for(lambda: [e for e in hive.log_events() if e.get("event") == "proxy.refused"], timeout=10)
    assert {("alice", "other.hive.test"), ("bob", ALLOWED)} <= {(e["agent"], e["host"]) for e in refused}
    import urllib.request
    metrics = urllib.request.urlopen(hive.url + "/metrics", timeout=10).read().decode()
    assert 'hyperhive_proxy_refused_total{agent="alice"}' in metrics


def test_a_mapped_loopback_name_opens_only_its_port_not_the_dashboard(hive: Hive, host_http: int) -> None:
    """The operator maps pkgs.hive.test:<port> to 127.0.0.1 and alice may reach
    pkgs.hive.test on any port: still only the mapped port is reachable, never
    the dashboard's or another agent's web UI on the same loopback."""
    dash = int(hive.url.rsplit(":", 1)[1])
    bob_port = int((hive.paths.agent("bob") / "port").read_text())  # type: ignore[arg-type]
    for port in (dash, bob_port):
        for how in (f"http://{ALLOWED}:{port}/", f"-p http://{ALLOWED}:{port}/"):
            status, out = run_cmd(hive, "alice", f"curl -sS -o /dev/null -w '%{{http_code}}' {how} 2>&1")
            assert out.strip().endswith("403") or "CONNECT tunnel failed, response 403" in out, (port, how, out)


def test_builtin_agents_still_message_each_other(hive: Hive) -> None:
    token = uuid.uuid4().hex[:8]
    hive.admin("send", to="alice", body=f"send bob ping {token}")
    wait_for(lambda: any(m["from"] == "alice" and "sent to bob" in m["body"]
                         for m in hive.admin("inbox", limit=200)["messages"]), timeout=30, what="alice confirms")
    wait_for(lambda: any(r["from"] == "alice" and token in r["body"] for r in _inbox_of(hive, "bob")),
             timeout=30, what="bob got it")


def _inbox_of(hive: Hive, agent: str) -> list[dict[str, Any]]:
    from hyperhive.store.models import Message, open_hive_db

    db = open_hive_db(hive.paths.db)
    try:
        return [{"from": m.sender, "body": m.body} for m in Message.select().where(Message.recipient == agent)]
    finally:
        db.close()
