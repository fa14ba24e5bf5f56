"""Test support: a real `hive serve` subprocess on a temp state dir, and
waiting on conditions with deadlines (never on luck).

Every surface of a daemon wants the operator token (issue 12). `Hive` knows
it (``run/operator.token``, or the ``--token-file`` it was given) and speaks
as the operator: `Hive.get`/`get_json` (Bearer), `Hive.session` (a logged-in
cookie session with its XSRF token, as the page has), `Hive.login_url`,
`Hive.ws_request` (the push socket, Bearer). ``urllib.request.urlopen`` (the
module-level opener) also authenticates, with Bearer, to the dashboards and
agent web UIs of the daemons this process started (`OperatorAuth`, also in
tests/agent_harness.py), so a test about something else need not carry the
token; a test about access uses `bare_opener()`, which never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hyperhive import client
from hyperhive.errors import ConnectFailed, Unavailable
from hyperhive.paths import StatePaths

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_exc = exc
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last error: {last_exc!r}")
        time.sleep(interval)


async def async_wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(interval)


class MissingE2EMarker(AssertionError):
    """A test outside the e2e tier started a daemon, a harness or a browser."""


# The pytest item running now, as (nodeid, carries the e2e marker); set by
# tests/conftest.py around each test's setup, call and teardown, so a
# module-scoped fixture started by a module's first test is judged by that test.
# None outside pytest (a bench script may use this module too).
_current_test: tuple[str, bool] | None = None


def enter_test(nodeid: str | None, e2e: bool = False) -> None:
    global _current_test
    _current_test = None if nodeid is None else (nodeid, e2e)


def require_e2e(what: str) -> None:
    """Fail at once when the running test is not in the e2e tier: ``what`` is
    the start point (e.g. "a daemon (tests/support.Hive.start)")."""
    __tracebackhide__ = True
    current = _current_test
    if current is None or current[1]:
        return
    raise MissingE2EMarker(
        f"{current[0]} starts {what} but has no e2e marker: decorate it with @pytest.mark.e2e "
        f"or set `pytestmark = pytest.mark.e2e` in its module (the fast tier is -m \"not e2e\")")


def bare_opener(*handlers: Any) -> urllib.request.OpenerDirector:
    """An opener that adds no credentials and uses no proxy."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)


def fetch(url: str, data: dict[str, Any] | bytes | None = None, headers: dict[str, str] | None = None,
          opener: urllib.request.OpenerDirector | None = None, method: str | None = None) -> tuple[int, bytes]:
    """(status, body) of one request; an HTTP error is an answer too. ``opener``
    defaults to `bare_opener()`: no credentials unless the caller gives them."""
    body = urllib.parse.urlencode(data, doseq=True).encode() if isinstance(data, dict) else data
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with (opener or bare_opener()).open(req, timeout=30) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


_LIVE: weakref.WeakSet[Hive] = weakref.WeakSet()


class OperatorAuth(urllib.request.BaseHandler):
    """For the module-level opener: Bearer to the surfaces of our own daemons."""

    handler_order = 400

    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        if not req.has_header("Authorization"):
            for h in list(_LIVE):
                token = h.token_for(req.host)
                if token is not None:
                    req.add_unredirected_header("Authorization", f"Bearer {token}")
                    break
        return req


urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({}), OperatorAuth()))


class DashSession:
    """A logged-in dashboard session (cookie jar + the page's XSRF token)."""

    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.jar = http.cookiejar.CookieJar()
        self.opener = bare_opener(urllib.request.HTTPCookieProcessor(self.jar))
        status, page = fetch(hive.login_url, opener=self.opener)  # 303 → the page
        assert status == 200, (status, page[:200])
        m = re.search(rb'<meta name="hive-xsrf" content="([^"]*)">', page)
        assert m is not None and m.group(1), "no XSRF token in the page"
        self.xsrf = m.group(1).decode()

    @property
    def cookie(self) -> str:
        value = next(c.value for c in self.jar if c.name == "hive_session")
        assert value is not None
        return value

    def get(self, path: str) -> tuple[int, bytes]:
        return fetch(self.hive.url + path, opener=self.opener)

    def post(self, path: str, data: dict[str, Any] | None = None, xsrf: bool = True) -> tuple[int, bytes]:
        headers = {"X-XSRF-Token": self.xsrf} if xsrf else {}
        return fetch(self.hive.url + path, data or {}, headers=headers, opener=self.opener, method="POST")


class Hive:
    """A daemon subprocess the test owns (stopped by pid at teardown)."""

    def __init__(self, state_dir: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.paths = StatePaths(state_dir)
        self.extra_args = extra_args or []
        self.env = env or {}  # added to (and overriding) the test's own environment
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-daemon.log"
        # Agents' sticky web ports (F20) per daemon: daemons of other tests (or other
        # checkouts) on this machine must not fight over the same ports. Fixed per
        # Hive, so a restarted daemon finds its ports again.
        self.port_base = random.Random(str(state_dir)).randrange(20000, 60000)

    def start(self) -> Hive:
        require_e2e("a daemon (tests/support.Hive.start)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        passable(self.state_dir)
        self.dashboard_port_file.unlink(missing_ok=True)  # a killed daemon's leftover
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperhive", "--state-dir", str(self.state_dir), "serve",
             "--listen", "127.0.0.1:0", "--agent-port-base", str(self.port_base), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        log.close()
        _LIVE.add(self)
        wait_for(self._up, timeout=30, what="daemon admin socket")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        try:
            self.admin("ping")
            return True
        except (ConnectFailed, Unavailable):  # not listening yet (or, briefly, not serving)
            return False

    @property
    def dashboard_port_file(self) -> Path:
        return self.state_dir / "run" / "dashboard.port"

    @property
    def url(self) -> str:
        """The dashboard's base URL (the daemon writes its bound port at start)."""
        text = wait_for(lambda: self.dashboard_port_file.exists() and self.dashboard_port_file.read_text().strip(),
                        timeout=30, what="run/dashboard.port")
        return f"http://127.0.0.1:{int(text)}"

    @property
    def token_file(self) -> Path:
        """Where the operator token is: the ``--token-file`` given, else the daemon's own."""
        if "--token-file" in self.extra_args:
            return Path(self.extra_args[self.extra_args.index("--token-file") + 1])
        given = self.env.get("HYPERHIVE_TOKEN_FILE") or os.environ.get("HYPERHIVE_TOKEN_FILE")
        return Path(given) if given else self.state_dir / "run" / "operator.token"

    @property
    def token(self) -> str:
        f = self.token_file
        return wait_for(lambda: f.read_text().strip() if f.exists() else "", timeout=30, what=str(f))

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def login_url(self) -> str:
        """The daemon's own login URL (``run/dashboard.url``, what `hive url` prints)."""
        f = self.state_dir / "run" / "dashboard.url"
        self.url  # noqa: B018 - the daemon writes it with the port file
        return wait_for(lambda: f.read_text().strip() if f.exists() else "", timeout=30, what=str(f))

    def token_for(self, hostport: str) -> str | None:
        """The token when ``hostport`` is this daemon's dashboard or one of its agents' UIs."""
        host, _, port = hostport.rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            return None
        p = int(port)
        dash = self.dashboard_port_file
        try:
            ours = self.port_base <= p < self.port_base + 900 or (dash.exists() and int(dash.read_text()) == p)
            return self.token_file.read_text().strip() if ours else None
        except (OSError, ValueError):
            return None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET on the dashboard with the Bearer token."""
        return fetch(self.url + path, headers={**self.bearer, **(headers or {})})

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        return status, json.loads(body)

    def session(self) -> DashSession:
        return DashSession(self)

    def ws_request(self, path: str = "/ws") -> Any:
        """A Tornado request for a websocket on the dashboard, with the Bearer token."""
        from tornado.httpclient import HTTPRequest

        return HTTPRequest(self.url.replace("http", "ws", 1) + path, headers=self.bearer)

    def agent_url(self, name: str) -> str:
        """An agent's web UI as the daemon relays it (its sticky port, agents/<n>/port)."""
        port = wait_for(lambda: (self.paths.agents / name / "port").read_text().strip(), what=f"{name}'s port")
        return f"http://127.0.0.1:{int(port)}"

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        return client.request(self.paths.admin_socket, op, timeout=60, **fields)

    def ls(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.admin("ls")["containers"]}

    def socket(self, name: str) -> Path:
        return self.paths.socket(name)  # type: ignore[arg-type]

    def spawn(self, name: str, **fields: Any) -> dict[str, Any]:
        c: dict[str, Any] = self.admin("spawn", name=name, **fields)["container"]
        # Ready when its harness has parked its system recv.
        wait_for(lambda: self.ls()[name]["parked"]["system"] >= 1, timeout=30, what=f"{name}'s harness")
        return c

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        _LIVE.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            reap_harnesses(self.paths)  # a daemon killed (or handed over) and not restarted
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        reap_harnesses(self.paths)

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def reap_harnesses(paths: StatePaths) -> list[int]:
    """Kill the harnesses a daemon left running (they outlive it, issue 16): each whose
    record (agents/<n>/harness.json) still names a live process started at that tick.
    A cleanly stopped daemon leaves no record. The pids killed."""
    from hyperhive.backends.local_adopt import end_left_running

    return end_left_running(paths.agents)


def passable(path: Path) -> None:
    """Let other uids pass (o+x, never read) every dir down to ``path``: a root
    daemon starts each agent as its own uid, and pytest's tmp dirs are 0700."""
    for d in [*reversed(path.resolve().parents), path.resolve()]:
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def local_time_zone(name: str | None = None) -> Iterator[Callable[[str], None]]:
    """The process's local time zone set to ``name`` (and to any other the body
    passes to the callable it gets), restored after."""
    was = os.environ.get("TZ")

    def use(zone: str) -> None:
        assert os.path.exists(f"/usr/share/zoneinfo/{zone}"), f"no tzdata for {zone}"
        os.environ["TZ"] = zone
        time.tzset()

    try:
        if name is not None:
            use(name)
        yield use
    finally:
        if was is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = was
        time.tzset()


def gateway_call(path: Path, model: str, stream: bool = False, max_tokens: int = 16) -> bytes:
    """One Messages API call on an agent's gateway socket (``agents/<n>/run/api.sock``), as
    its CLI makes it (with tools: a main request); the raw HTTP response."""
    body = json.dumps({"model": model, "stream": stream, "max_tokens": max_tokens, "tools": [{"name": "t"}],
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST /v1/messages?beta=true HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            f"x-api-key: placeholder\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def priced_hive(tmp_path: Path, env: dict[str, str], prices: dict[str, dict[str, float]], *extra: str) -> Hive:
    """A daemon (not started) on ``tmp_path/state`` pricing model calls by ``prices``
    (``--prices``, the file written to ``tmp_path/prices.json``), ``extra`` flags after."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    return Hive(tmp_path / "state", ["--prices", str(path), *extra], env=env)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"8m"``) mounted on ``where`` (made), unmounted after; root only."""
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


class Wakes:
    """Counts an asyncio loop's ``call_soon_threadsafe`` calls made off its thread
    (each a self-pipe write, a wake-up of the loop); ``restore`` puts it back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.off_thread = 0
        self._loop = loop
        self._real = loop.call_soon_threadsafe
        self._thread = threading.get_ident()

        def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._thread:
                self.off_thread += 1
            return self._real(fn, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

    def restore(self) -> None:
        self._loop.call_soon_threadsafe = self._real  # type: ignore[method-assign]


def proc_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (``/proc/<p>/task/*/children``), those gone meanwhile left out."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def harness_below(pid: int) -> int | None:
    """The harness itself (`python -I -m hyperhive harness`) in the tree of ``pid`` (a launcher, bwrap)."""
    for p in proc_tree(pid):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[1:5] == [b"-I", b"-m", b"hyperhive", b"harness"]:
                return p
        except FileNotFoundError:
            continue
    return None
