"""Issue 13, acceptance 4: the dashboard and the CLI go through one operator
service, so each refuses the same bad input with the same error code (and
the dashboard with that error's HTTP status), and nothing changes.

Each case is sent twice to one real daemon: as the dashboard's POST (a
logged-in session with its XSRF token, as the page sends it) and as the
admin socket's JSON line (what `hive` sends). The manager's own surface (its
socket) is checked where it has the verb."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import DashSession, Hive, fetch, wait_for

pytestmark = pytest.mark.e2e

BIG = "x" * (64 * 1024 + 1)
NAMES = [  # (on the wire, in a dashboard path)
    ("..", ".."), ("a/b", "a%2Fb"), ("a\x00b", "a%00b"), ("../x", "..%2Fx"), ("A", "A"), ("m1nd!", "m1nd%21"),
]
STATUS = {"bad_request": 400, "bad_name": 400, "forbidden": 403, "unknown_agent": 404, "unknown_id": 404,
          "conflict": 409}

# (what, dashboard path, dashboard form (a dict, or the raw urlencoded bytes),
#  admin line (a dict, or the raw JSON bytes), the code both answer)
Case = tuple[str, str, "dict[str, Any] | bytes", "dict[str, Any] | bytes", str]
CASES: list[Case] = [
    ("empty body", "/send", {"to": "m1nd", "body": ""}, {"op": "send", "to": "m1nd", "body": ""}, "bad_request"),
    ("blank body", "/send", {"to": "m1nd", "body": " \n "}, {"op": "send", "to": "m1nd", "body": " \n "},
     "bad_request"),
    ("body over 64 KiB", "/send", {"to": "m1nd", "body": BIG}, {"op": "send", "to": "m1nd", "body": BIG},
     "bad_request"),
    ("lone surrogate in the body", "/send", b"to=m1nd&body=x%ED%A0%80y",
     b'{"op": "send", "to": "m1nd", "body": "x\\ud800y"}', "bad_request"),
    ("lone surrogate in the recipient", "/send", b"to=m%ED%B0%80&body=hi",
     b'{"op": "send", "to": "m\\udc00", "body": "hi"}', "bad_request"),
    ("lone surrogate in a name", "/start/%ED%A0%80", {}, b'{"op": "start", "name": "\\ud800"}', "bad_request"),
    ("send to an unknown agent", "/send", {"to": "nobody", "body": "hi"},
     {"op": "send", "to": "nobody", "body": "hi"}, "unknown_agent"),
    ("send to a bad name", "/send", {"to": "../x", "body": "hi"}, {"op": "send", "to": "../x", "body": "hi"},
     "bad_name"),
    *((f"{verb} of an unknown agent", f"/{verb}/nobody", {}, {"op": verb, "name": "nobody"}, "unknown_agent")
      for verb in ("start", "stop", "restart", "rebuild", "kill")),
    ("destroy of an unknown agent", "/destroy/nobody", {"purge": "1"}, {"op": "destroy", "name": "nobody",
                                                                        "purge": True}, "unknown_agent"),
    ("destroy of the manager", "/destroy/m1nd", {}, {"op": "destroy", "name": "m1nd"}, "conflict"),
    ("revive of no tombstone", "/revive/nobody", {}, {"op": "revive", "name": "nobody"}, "unknown_agent"),
    *((f"{verb} of {wire!r}", f"/{path_verb}/{path}", {}, {"op": op, "name": wire}, "bad_name")
      for wire, path in NAMES
      for verb, path_verb, op in (("start", "start", "start"), ("kill", "kill", "kill"),
                                  ("destroy", "destroy", "destroy"), ("revive", "revive", "revive"),
                                  ("purge", "purge-tombstone", "purge"))),
    ("spawn request for a reserved name", "/request-spawn", {"name": "operator"},
     {"op": "request_spawn", "name": "operator"}, "bad_name"),
    ("spawn request for a bad name", "/request-spawn", {"name": "../x"}, {"op": "request_spawn", "name": "../x"},
     "bad_name"),
    ("spawn request allowing a bad name", "/request-spawn", {"name": "fresh", "allowed_recipients": "ok, ../x"},
     {"op": "request_spawn", "name": "fresh", "allowed_recipients": ["ok", "../x"]}, "bad_name"),
    ("spawn request with an unknown driver", "/request-spawn", {"name": "fresh", "driver": "gpt"},
     {"op": "request_spawn", "name": "fresh", "driver": "gpt"}, "bad_request"),
    # Issue 18: a placement (cpus, memory_mb, resources), refused before anything is queued. This
    # daemon's backend is local: a good placement is refused too (nothing would be reserved).
    *((f"spawn request with {what}", "/request-spawn", {"name": "fresh", **form},
       {"op": "request_spawn", "name": "fresh", **line}, "bad_request") for what, form, line in (
        ("negative cpus", {"cpus": "-1"}, {"cpus": -1}),
        ("zero cpus", {"cpus": "0"}, {"cpus": 0}),
        ("a fraction of memory", {"memory_mb": "0.5"}, {"memory_mb": 0.5}),
        ("a negative resource", {"resources": "pool=-1"}, {"resources": {"pool": -1}}),
        ("an odd resource name", {"resources": "a/b=1"}, {"resources": {"a/b": 1}}),
        ("CPU as a resource", {"resources": "CPU=1"}, {"resources": {"CPU": 1}}),
        ("a resource that is a word", {"resources": "pool=one"}, {"resources": {"pool": "one"}}),
        ("a placement on the local backend", {"cpus": "1", "resources": "pool=1"},
         {"cpus": 1, "resources": {"pool": 1}}),
    )),
    ("spawn request with NaN cpus", "/request-spawn", {"name": "fresh", "cpus": "nan"},
     b'{"op": "request_spawn", "name": "fresh", "cpus": 1e400}', "bad_request"),  # JSON has no NaN: inf
    ("spawn request with a NaN resource", "/request-spawn", {"name": "fresh", "resources": "pool=nan"},
     b'{"op": "request_spawn", "name": "fresh", "resources": {"pool": -1e400}}', "bad_request"),
    ("answer to an unknown question", "/answer-question/999999", {"text": "yes"},
     {"op": "answer", "question_id": 999999, "text": "yes"}, "unknown_id"),
    ("cancel of an unknown question", "/cancel-question/999999", {}, {"op": "cancel_question",
                                                                      "question_id": 999999}, "unknown_id"),
    ("approve of an unknown approval", "/approve/999999", {}, {"op": "approve", "approval_id": 999999}, "unknown_id"),
    ("deny of an unknown approval", "/deny/999999", {}, {"op": "deny", "approval_id": 999999}, "unknown_id"),
    ("answer with a word for an id", "/answer-question/abc", {"text": "yes"},
     {"op": "answer", "question_id": "abc", "text": "yes"}, "bad_request"),
    ("cancel with a word for an id", "/cancel-question/abc", {}, {"op": "cancel_question", "question_id": "abc"},
     "bad_request"),
    ("approve with a word for an id", "/approve/one", {}, {"op": "approve", "approval_id": "one"}, "bad_request"),
    ("deny with a negative id", "/deny/-1", {}, {"op": "deny", "approval_id": -1}, "bad_request"),
    ("approve with id zero", "/approve/0", {}, {"op": "approve", "approval_id": 0}, "bad_request"),
    ("approve with an id past 64 bits", "/approve/99999999999999999999999", {},
     b'{"op": "approve", "approval_id": 99999999999999999999999}', "bad_request"),
]


class Line:
    """A raw JSON-lines connection: exact bytes out, one response in."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(str(path))
        self.buf = b""

    def ask(self, req: dict[str, Any] | bytes) -> dict[str, Any]:
        data = req if isinstance(req, bytes) else json.dumps({"id": 1, **req}).encode()
        self.s.sendall(data + b"\n")
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            assert chunk, "the daemon closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        self.s.close()


def post(s: DashSession, path: str, form: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    if isinstance(form, dict):
        status, body = s.post(path, form)
    else:
        status, body = fetch(s.hive.url + path, form, opener=s.opener, method="POST",
                             headers={"X-XSRF-Token": s.xsrf, "Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(body)


def world(h: Hive) -> dict[str, Any]:
    """Everything a refused request might have changed."""
    with sqlite3.connect(h.paths.db) as db:
        messages = db.execute("SELECT count(*), count(delivered_at) FROM messages").fetchone()
        approvals = db.execute("SELECT count(*) FROM approvals").fetchone()[0]
        questions = db.execute("SELECT id, how FROM operator_questions ORDER BY id").fetchall()
    return {
        "containers": {n: (c["state"], c["pid"], c["restarts"]) for n, c in h.ls().items()},
        "messages": messages, "approvals": approvals, "questions": questions,
        "dirs": sorted(p.name for p in h.paths.agents.iterdir()),
        "tombstones": h.admin("tombstones")["tombstones"],
    }


@pytest.fixture(scope="module")
def hive(module_hive: Hive) -> Hive:
    # m1nd's harness takes its start's kick on its own time: the world is still only once it has.
    wait_for(lambda: (m := module_hive.ls()["m1nd"])["undelivered"] == 0 and m["parked"]["system"] >= 1
             and m["activity"] in ("idle", None), timeout=30, what="m1nd idle, its kick taken")
    return module_hive


@pytest.fixture(scope="module")
def session(hive: Hive) -> DashSession:
    return hive.session()


@pytest.fixture
def admin(hive: Hive) -> Any:
    line = Line(hive.paths.admin_socket)
    yield line
    line.close()


@pytest.mark.parametrize(("what", "path", "form", "line", "code"), CASES, ids=[c[0] for c in CASES])
def test_the_dashboard_and_the_admin_socket_refuse_alike(
    hive: Hive, session: DashSession, admin: Line, what: str, path: str, form: dict[str, Any] | bytes,
    line: dict[str, Any] | bytes, code: str,
) -> None:
    before = world(hive)
    status, dash = post(session, path, form)
    sock = admin.ask(line)
    assert dash["ok"] is False and sock["ok"] is False, (dash, sock)
    assert (dash["error"]["code"], sock["error"]["code"]) == (code, code), (dash, sock)
    assert status == STATUS[code], (status, dash)
    assert dash["error"]["message"] and sock["error"]["message"]
    assert admin.ask({"op": "ping"})["agent"] == "operator"  # the connection lives
    assert world(hive) == before


@pytest.mark.parametrize("verb", ["start", "restart", "kill"])
def test_the_manager_may_not_act_on_itself_on_its_own_surface(hive: Hive, verb: str) -> None:
    before = world(hive)
    m1nd = Line(hive.socket("m1nd"))
    try:
        out = m1nd.ask({"op": verb, "name": "m1nd"})
        assert out["ok"] is False and out["error"]["code"] == "forbidden", out
        for wire, _ in NAMES:  # and its names pass the same checks as the operator's
            assert m1nd.ask({"op": verb, "name": wire})["error"]["code"] == "bad_name"
        assert m1nd.ask({"op": verb, "name": "nobody"})["error"]["code"] == "unknown_agent"
        bad = m1nd.ask({"op": "request_spawn", "name": "fresh", "allowed_recipients": ["../x"]})
        assert bad["error"]["code"] == "bad_name"
        for placement in ({"cpus": -1}, {"resources": {"CPU": 1}}, {"resources": {"a b": 1}},
                          {"resources": {"pool": 1}}):  # the last: this daemon's backend places nothing
            bad = m1nd.ask({"op": "request_spawn", "name": "fresh", **placement})
            assert bad["error"]["code"] == "bad_request", (placement, bad)
    finally:
        m1nd.close()
    assert world(hive) == before


def fields(reply: dict[str, Any]) -> set[str]:
    return set(reply) - {"ok", "id"}


def test_one_reply_shape_per_verb_on_both_surfaces(hive: Hive, session: DashSession) -> None:
    """A send, a spawn request and its denial: the dashboard and the socket
    answer with the same fields; every listing says how much it left out."""
    status, dash = post(session, "/send", {"to": "m1nd", "body": "hello from the page"})
    sock = hive.admin("send", to="m1nd", body="hello from the CLI")
    assert status == 200 and fields(dash) == fields(sock) == {"message_id"}
    _, dash = post(session, "/request-spawn", {"name": "shape-a"})
    sock = hive.admin("request_spawn", name="shape-b")
    assert fields(dash) == fields(sock) == {"approval_id"}
    _, denied = post(session, f"/deny/{dash['approval_id']}", {"reason": " later "})
    again = hive.admin("deny", approval_id=sock["approval_id"], reason=" later ")
    assert denied["approval"]["reason"] == again["approval"]["reason"] == "later"
    assert fields(denied) == fields(again) == {"approval"}
    listed = hive.admin("approvals")
    assert fields(listed) == {"pending", "decided", "more"} and listed["more"] == 0
    assert fields(hive.admin("questions")) == {"pending", "resolved", "more"}
    inbox = hive.admin("inbox", limit=1)
    assert fields(inbox) == {"messages", "more"} and isinstance(inbox["more"], int)
    assert fields(hive.admin("ls")) == {"containers", "more"}
    assert fields(hive.admin("tombstones")) == {"tombstones", "more"}


def test_destroy_and_purge_answer_alike_on_both_surfaces(hive: Hive, session: DashSession) -> None:
    for name in ("gone-a", "gone-b"):
        hive.spawn(name)
    status, dash = post(session, "/destroy/gone-a", {})
    sock = hive.admin("destroy", name="gone-b")
    assert status == 200 and fields(dash) == fields(sock) == {"container", "destroyed", "purged"}
    assert (dash["destroyed"], dash["purged"], dash["container"]["state"]) == ("gone-a", False, "destroyed")
    assert (sock["destroyed"], sock["purged"], sock["container"]["purged"]) == ("gone-b", False, [])
    _, dash = post(session, "/purge-tombstone/gone-a", {})
    sock = hive.admin("purge", name="gone-b")
    assert fields(dash) == fields(sock) == {"name", "purged"}
    assert dash["name"] == "gone-a" and dash["purged"] and sock["purged"]
    assert not {"gone-a", "gone-b"} & {p.name for p in hive.paths.agents.iterdir()}
