"""The egress allowlist, `--resolve`-style mappings and host normalization (pure tables)."""

from __future__ import annotations

import pytest

from hyperhive.errors import BadRequest
from hyperhive.sandbox.allowlist import MAX_ENTRIES, Allowlist, normalize_host, parse_resolve

LONG_LABEL = "a" * 64
NAME_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
assert len(NAME_253) == 253


@pytest.mark.parametrize("entries, canonical", [
    ([], ()),
    (["example.com"], ("example.com",)),
    (["Example.COM."], ("example.com",)),
    (["*.example.com"], ("*.example.com",)),
    (["example.com:8443", "*.Example.com:443"], ("example.com:8443", "*.example.com:443")),
    (["203.0.113.7", "203.0.113.7:80"], ("203.0.113.7", "203.0.113.7:80")),
    (["a.test", "A.TEST", "a.test."], ("a.test",)),  # duplicates fold
    (["xn--bcher-kva.example"], ("xn--bcher-kva.example",)),
    (["localhost"], ("localhost",)),
    ([NAME_253], (NAME_253,)),
    (["a-b.c-d.example"], ("a-b.c-d.example",)),
])
def test_parse_accepts(entries: list[str], canonical: tuple[str, ...]) -> None:
    assert Allowlist.parse(entries).patterns == canonical


@pytest.mark.parametrize("entries, needle", [
    ("example.com", "must be a list"),
    ({"example.com": 1}, "must be a list"),
    (None, "must be a list"),
    ([1], "[0] must be a string"),
    (["ok.test", None], "[1] must be a string"),
    ([["x"]], "must be a string"),
    ([f"h{i}.test" for i in range(MAX_ENTRIES + 1)], f"at most {MAX_ENTRIES}"),
    (["", ], "not a host name"),
    ([".."], "not a host name"),
    (["/"], "not a URL"),
    (["example.com/path"], "not a URL"),
    (["user@example.com"], "not a URL"),
    (["http://x"], "not a URL"),
    (["a\0b.test"], "only letters"),
    (["a b"], "only letters"),
    ([" a.test"], "only letters"),
    (["a.test\n"], "only letters"),
    (["\ud800"], "only letters"),
    (["bücher.example"], "only letters"),
    (["*."], "not a host name"),
    (["*"], "not a host name"),
    (["x*.com"], "not a host name"),
    (["*.*.example.com"], "not a host name"),
    (["a.*.example.com"], "not a host name"),
    (["*example.com"], "not a host name"),
    (["a" * 300], "not a host name"),
    ([NAME_253 + "e"], "not a host name"),
    ([LONG_LABEL + ".test"], "not a host name"),
    (["-a.test"], "not a host name"),
    (["a-.test"], "not a host name"),
    (["a_b.test"], "not a host name"),
    (["a..b"], "not a host name"),
    (["127.1"], "not a host name"),  # inet_aton would read it as 127.0.0.1
    (["0x7f000001"], "not a host name"),
    (["1.2.3.4.5"], "not a host name"),
    (["01.2.3.4"], "not a host name"),
    (["*.1.2.3.4"], "not an IP address"),
    (["example.com:"], "port"),
    (["example.com:0"], "port"),
    (["example.com:65536"], "port"),
    (["example.com:+80"], "port"),
    (["example.com:80:80"], "at most one"),
    (["example.com:1_0"], "port"),
    (["[::1]"], "IPv6"),
    (["::1"], "IPv6"),
    (["[2001:db8::1]:443"], "IPv6"),
])
def test_parse_refuses(entries: object, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        Allowlist.parse(entries, where="agent.json network.allow")
    assert needle in info.value.message
    assert info.value.message.startswith("agent.json network.allow")


def test_refusal_message_names_the_entry_and_stays_short() -> None:
    with pytest.raises(BadRequest) as info:
        Allowlist.parse(["ok.test", "x" * 5000])
    assert "network.allow[1]" in info.value.message
    assert "5000 characters" in info.value.message and len(info.value.message) < 400


ALLOW = Allowlist.parse(["example.com", "*.pkgs.test", "api.test:8443", "*.git.test:443", "203.0.113.7:80"])


@pytest.mark.parametrize("host, port, ok", [
    ("example.com", 443, True),
    ("example.com", 80, True),
    ("EXAMPLE.com.", 1, True),
    ("www.example.com", 443, False),  # no wildcard for it
    ("example.com.evil.test", 443, False),
    ("evilexample.com", 443, False),
    ("a.pkgs.test", 443, True),
    ("a.b.pkgs.test", 80, True),
    ("pkgs.test", 443, False),  # a wildcard is not the apex
    ("xpkgs.test", 443, False),
    ("api.test", 8443, True),
    ("api.test", 443, False),
    ("x.git.test", 443, True),
    ("x.git.test", 22, False),
    ("git.test", 443, False),
    ("203.0.113.7", 80, True),
    ("203.0.113.7", 443, False),
    ("203.0.113.8", 80, False),
    ("", 80, False),
    ("exa mple.com", 80, False),
    ("example.com/x", 80, False),
    ("\ud800", 80, False),
])
def test_allows(host: str, port: int, ok: bool) -> None:
    assert ALLOW.allows(host, port) is ok


def test_empty_list_allows_nothing() -> None:
    assert not Allowlist.parse([]).allows("example.com", 443)
    assert not Allowlist().allows("example.com", 443)


@pytest.mark.parametrize("host, out", [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("localhost", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"),
    ("::FFFF:127.0.0.1", "::ffff:7f00:1"),
    ("[2001:DB8::1]", "2001:db8::1"),
    (NAME_253, NAME_253),
    (NAME_253 + ".", NAME_253),
    ("example.com..", None),
    ("..", None),
    ("", None),
    (".", None),
    ("a b", None),
    ("a/b", None),
    ("a\0b", None),
    ("\ud800", None),
    ("bücher.example", None),
    ("*.example.com", None),
    ("a" * 300, None),
    (LONG_LABEL, None),
    ("127.1", None),
    ("0x7f.1", None),
    ("[127.0.0.1]", None),
    ("[::1", None),
    ("::1]", None),
    ("1:2", None),
])
def test_normalize_host(host: str, out: str | None) -> None:
    assert normalize_host(host) == out


@pytest.mark.parametrize("text, out", [
    ("", {}),
    ("   ", {}),
    ("pkgs.hive.test:8080=127.0.0.1", {"pkgs.hive.test:8080": "127.0.0.1"}),
    ("A.test:443=10.0.0.1, b.test:80 = [::1]", {"a.test:443": "10.0.0.1", "b.test:80": "::1"}),
    ("a.test:1=10.0.0.1,a.test:1=10.0.0.1", {"a.test:1": "10.0.0.1"}),
    ("a.test:1=10.0.0.1,a.test:2=10.0.0.2", {"a.test:1": "10.0.0.1", "a.test:2": "10.0.0.2"}),
    ("a.test.:443=2001:db8::1", {"a.test:443": "2001:db8::1"}),
])
def test_parse_resolve(text: str, out: dict[str, str]) -> None:
    assert parse_resolve(text) == out


@pytest.mark.parametrize("text, needle", [
    ("a.test", "name:port=address"),
    ("a.test=1.2.3.4", "needs a port"),
    ("a.test:0=1.2.3.4", "needs a port"),
    ("a.test:65536=1.2.3.4", "needs a port"),
    ("a.test:x=1.2.3.4", "needs a port"),
    ("a.test:1=", "not an IP address"),
    ("a.test:1=localhost", "not an IP address"),
    ("a.test:1=1.2.3", "not an IP address"),
    (":1=1.2.3.4", "not a host name"),
    ("1.2.3.4:1=1.2.3.4", "not a host name"),
    ("a b:1=1.2.3.4", "not a host name"),
    ("a.test:1=1.2.3.4,", "name:port=address"),
    ("a.test:1=1.2.3.4,,b.test:1=1.2.3.4", "name:port=address"),
    ("a.test:1=1.2.3.4,a.test:1=1.2.3.5", "mapped twice"),
    ("\ud800:1=1.2.3.4", "not a host name"),
])
def test_parse_resolve_refuses(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_resolve(text)
    assert needle in str(info.value)
