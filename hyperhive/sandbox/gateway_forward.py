"""The model API gateway's request handler (`ApiGateway` serves it): one
agent request to the upstream, the response streamed back.

Only the Messages API (and its token count), the model list and ``HEAD /``
are forwarded; the agent's ``x-api-key``/``Authorization`` are replaced by
the daemon's (they pass through when the daemon holds no credential). Bodies
are buffered against the agent's budget (``ApiGateway.reserve``), responses
stream back as they arrive, at the agent's pace, and their usage is read on
the way (`sse_usage`) for ``gateway.request`` and ``on_usage``. An agent that
hangs up mid-answer stops only what it is sent: the answer is still read to
its end and counted (the API bills it); the requests an agent has upstream,
left ones included, are capped (`ApiGateway.enter`). Neither bodies nor
credentials are ever logged.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import tornado.httpclient
import tornado.httputil
import tornado.iostream
import tornado.web

import hyperhive.logs as logs
from hyperhive.sandbox.sse_usage import JsonUsage, UsageScanner
from hyperhive.sandbox.upstream import upstream_url

if TYPE_CHECKING:
    from hyperhive.sandbox.gateway import ApiGateway

__all__ = ["AGENT_BODY_BUDGET", "BODY_LIMIT", "MAX_IN_FLIGHT", "Forward", "describe"]

_log = logs.get("hyperhive.gateway")

BODY_LIMIT = 64 * 1024 * 1024
AGENT_BODY_BUDGET = 2 * BODY_LIMIT  # request bodies one agent may have buffered here at once
MAX_IN_FLIGHT = 16  # upstream requests per agent at once, those it hung up on included
CONNECT_TIMEOUT = 30.0
REQUEST_TIMEOUT = 1800.0  # a stream may last many minutes
# What the key is used for: the Messages API (and its token count) and the model
# list; the CLI also probes `HEAD /`. Nothing else (files, batches, admin) is forwarded.
_FORWARDED = re.compile(r"(POST /v1/messages(/count_tokens)?|GET /v1/models(/[A-Za-z0-9._-]+)?|HEAD /)")

_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                  "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
# Host comes from the upstream URL, Content-Length from the body, Accept-Encoding
# from the client (gzip, decoded here: the usage must be readable).
_REQUEST_DROP = _HOP | {"host", "content-length", "accept-encoding", "expect"}
_CREDENTIALS = frozenset({"x-api-key", "authorization"})
_RESPONSE_DROP = _HOP | {"content-length", "x-consumed-content-encoding"}


def describe(err: BaseException) -> str:
    """An error for a log line or an agent's answer: its type, and its text when it has one."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _AgentGone(tornado.httputil.HTTPInputError):
    """Raised into tornado's client to end the upstream read when the agent
    has gone (the one exception type it lets pass without an error log)."""

    def __init__(self) -> None:
        super().__init__("the agent went away")


def _api_error(message: str, kind: str = "api_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": f"hyperhive gateway: {message}"}}


class _Cut(tornado.httputil.HTTPInputError):
    """Raised into tornado's client to end a response the budget's hard cap stops."""


@tornado.web.stream_request_body
class Forward(tornado.web.RequestHandler):
    """One agent request → the upstream, the response streamed back."""

    def initialize(self, gateway: ApiGateway, agent: str) -> None:
        self.gateway = gateway
        self.agent = agent
        self._t0 = time.monotonic()
        self._chunks: list[bytes] = []
        self._held = 0  # bytes of this body counted in the agent's budget
        self._size = 0
        self._rejected = False
        self._guarded = False  # a model call: the budget is asked before it goes
        self._gone = False
        self._head_sent = False
        self._status = 0
        self._reason = ""
        self._resp_headers: list[tuple[str, str]] = []
        self._sse: UsageScanner | None = None
        self._checked = 0  # the scanner's updates the guard has seen
        self._json: JsonUsage | None = None

    def compute_etag(self) -> str | None:
        return None

    def prepare(self) -> None:
        try:  # the path as the upstream would see it (an absolute-form target keeps only its path)
            url = upstream_url(self.gateway.upstream.base_url, self.request.uri or "/")
        except ValueError:
            return  # _forward answers 400
        line = f"{self.request.method} {url[len(self.gateway.upstream.base_url):].split('?', 1)[0]}"
        if _FORWARDED.fullmatch(line) is None:
            self._rejected = True
            self.set_status(403)
            self.finish(_api_error(f"{line} is not forwarded (only the Messages API and the model list)"))
            self._report()
            return
        self._guarded = line == "POST /v1/messages"
        if self._refused():
            return
        length = self.request.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > BODY_LIMIT:
            self._too_large()

    def _refused(self) -> bool:
        """A model call the budget refuses (asked at its head, and again once its body has come)."""
        guard = self.gateway.guard
        if guard is None or not self._guarded or (why := guard.refusal(self.agent)) is None:
            return False
        # A 400, which the CLI does not retry: the turn ends here (a 429 or 5xx would be retried).
        self._rejected = True
        self.set_status(400)
        self.finish(_api_error(why, "invalid_request_error"))
        self._report()
        return True

    def data_received(self, chunk: bytes) -> None:
        if self._rejected:
            return
        self._size += len(chunk)
        if self._size > BODY_LIMIT:
            self._drop_body()
            self._too_large()
            return
        if not self.gateway.reserve(self.agent, len(chunk)):
            self._drop_body()
            self._rejected = True
            self.set_status(503)
            self.finish(_api_error(f"this agent has over {AGENT_BODY_BUDGET // (1024 * 1024)} MiB of request "
                                   f"bodies in flight"))
            self._report()
            return
        self._held += len(chunk)
        self._chunks.append(chunk)

    def _drop_body(self) -> None:
        """Forget the buffered body and give its bytes back to the agent's budget."""
        self._chunks = []
        self.gateway.release(self.agent, self._held)
        self._held = 0

    def on_finish(self) -> None:
        self._drop_body()

    def _too_large(self) -> None:
        self._rejected = True
        self.set_status(413)
        self.finish(_api_error(f"request body over {BODY_LIMIT // (1024 * 1024)} MiB"))
        self._report()

    def on_connection_close(self) -> None:
        self._gone = True
        self._drop_body()  # a stalled upload that went away keeps nothing here

    async def get(self) -> None:
        await self._forward()

    head = post = put = patch = delete = options = get

    # --- the upstream response, as it arrives ---------------------------------

    def _on_header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            parts = line.rstrip("\r\n").split(" ", 2)
            self._status = int(parts[1])
            self._reason = parts[2] if len(parts) > 2 else ""
            self._resp_headers = []
        elif line in ("\r\n", "\n"):
            if 100 <= self._status < 200:
                return  # an interim response; the real one follows
            self._scan_setup()
            self._start_response()
        else:
            name, _, value = line.partition(":")
            self._resp_headers.append((name.strip(), value.strip()))

    def _scan_setup(self) -> None:
        """The body's usage is read whether or not the agent is still there to be sent it."""
        ctype = next((v for k, v in self._resp_headers if k.lower() == "content-type"), "").lower()
        if ctype.startswith("text/event-stream"):
            self._sse = UsageScanner()
        elif ctype.startswith("application/json"):
            self._json = JsonUsage()

    def _start_response(self) -> None:
        if self._gone or self._head_sent:
            return
        self.set_status(self._status, self._reason or None)
        self.clear_header("Content-Type")
        self.clear_header("Server")
        seen: set[str] = set()
        for name, value in self._resp_headers:
            low = name.lower()
            if low in _RESPONSE_DROP:
                continue
            try:
                if low in seen:
                    self.add_header(name, value)
                else:
                    self.set_header(name, value)
                    seen.add(low)
            except ValueError:
                continue  # a header tornado will not write (control characters)
        self._head_sent = True
        self.flush()

    def _on_chunk(self, chunk: bytes) -> Any:
        if self._gone and self._sse is None and self._json is None:
            raise _AgentGone()  # nothing in it to count: the upstream read ends here
        if self._sse is not None:
            self._sse.feed(chunk)
            if self._sse.updates != self._checked and self.gateway.guard is not None:
                self._checked = self._sse.updates
                why = self.gateway.guard.cut(self.agent, self._sse.so_far(), self)
                if why is not None:
                    _log.warning("gateway.cut", agent=self.agent, reason=why)
                    raise _Cut(why)
        elif self._json is not None:
            self._json.feed(chunk)
        if self._gone:
            # The agent hung up: the rest is read (the API bills it) and counted, never sent.
            return None
        self._start_response()
        self.write(chunk)
        return self._flushed()  # awaited by the client: the agent's pace is the upstream's

    async def _flushed(self) -> None:
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            self._gone = True  # the next chunks are still read, for their usage

    # --- the request ---------------------------------------------------------

    async def _forward(self) -> None:
        gw = self.gateway
        upstream = gw.upstream
        try:
            url = upstream_url(upstream.base_url, self.request.uri or "/")
        except ValueError as err:
            self.set_status(400)
            self.finish(_api_error(str(err)))
            self._report()
            return
        headers = tornado.httputil.HTTPHeaders()
        named = {h.strip().lower() for h in self.request.headers.get("Connection", "").split(",")}
        for name, value in self.request.headers.get_all():
            low = name.lower()
            if low in _REQUEST_DROP or low in named:
                continue
            if upstream.holds_credential and low in _CREDENTIALS:
                continue
            headers.add(name, value)
        for name, value in upstream.headers.items():
            headers[name] = value
        method = self.request.method or "GET"
        body = b"".join(self._chunks)
        self._drop_body()
        if self._refused():  # the spend may have moved while the body came
            return
        if not gw.enter(self.agent):
            # Left requests are still read to their end: this bounds what one agent holds upstream.
            self.set_status(503)
            self.finish(_api_error(f"this agent has {MAX_IN_FLIGHT} model API requests in flight", "overloaded_error"))
            self._report()
            return
        request = tornado.httpclient.HTTPRequest(
            url, method=method, headers=headers,
            body=body if body or method in ("POST", "PUT", "PATCH") else None,
            follow_redirects=False, decompress_response=True, allow_nonstandard_methods=True,
            connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT,
            header_callback=self._on_header_line, streaming_callback=self._on_chunk,
        )
        try:
            await gw.client().fetch(request, raise_error=False)
            if not self._head_sent and not self._gone:
                self._start_response()  # no body at all (204, HEAD)
        except Exception as err:  # noqa: BLE001 - whatever failed, the agent gets an answer
            if self._gone:
                pass
            elif not self._head_sent:
                self.clear()
                self.set_status(502)
                self.finish(_api_error(f"upstream {upstream.base_url} unreachable: {describe(err)}"))
            else:
                # Mid-stream: never end the response cleanly, the agent must see it was cut.
                _log.info("gateway.upstream_cut", agent=self.agent, path=self._path(), error=describe(err))
                self.request.connection.close()  # type: ignore[union-attr]
        finally:
            gw.leave(self.agent)
        self._report()

    def _path(self) -> str:
        """The request's path, no query (for logs and usage records)."""
        return (self.request.uri or "").split("?", 1)[0][:512]

    def _report(self) -> None:
        path = self._path()
        ms = round((time.monotonic() - self._t0) * 1000, 1)
        usage: dict[str, Any] | None = None
        if self._sse is not None:
            usage = self._sse.result()
        elif self._json is not None:
            usage = self._json.result()
        status = self.get_status()
        record = {"model": None, "input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, **(usage or {}), "status": status, "path": path, "ms": ms}
        _log.info("gateway.request", agent=self.agent, method=self.request.method, path=path, status=status,
                  ms=ms, model=record["model"], input_tokens=record["input_tokens"],
                  output_tokens=record["output_tokens"])
        if self.gateway.guard is not None:
            self.gateway.guard.done(self.agent, self)  # its partial usage is replaced by the record below
        self.gateway.report(self.agent, record)
