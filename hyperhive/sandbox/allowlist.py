"""Which hosts an agent's egress proxy lets through (pure).

An agent's ``agent.json`` says ``"network": {"allow": [...]}``; each entry is
one of

    example.com          that host, any port
    *.example.com        any subdomain of it (not example.com itself)
    example.com:8443     that host, that port only
    *.example.com:443    any subdomain, that port only
    203.0.113.7[:port]   an IPv4 literal (the proxy still refuses it unless
                         the address is globally routable)

The rules are strict on purpose: an entry is a DNS name (letters, digits,
hyphens, dots) or an IPv4 literal and nothing else, so no spelling of a URL,
userinfo, path or odd Unicode can make an entry mean more than it says.
Matching is case-insensitive and ignores one trailing dot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from hyperhive.errors import BadRequest

__all__ = ["MAX_ENTRIES", "Allowlist", "normalize_host", "parse_resolve"]

MAX_ENTRIES = 256

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# A last label that getaddrinfo/inet_aton could read as a number ("127.1",
# "0x7f000001") is not a name: it must not slip past the IP-literal rules.
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


def _dns_name(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    labels = host.split(".")
    return all(_LABEL.match(label) for label in labels) and not _NUMERIC_LABEL.match(labels[-1])


def normalize_host(host: str) -> str | None:
    """The canonical form of a host name or IP literal, or None if it is neither.

    Lowercase, one trailing dot dropped; ASCII only (an internationalized name
    must come in its ``xn--`` form). IP literals come back canonical (IPv6
    without brackets, compressed).
    """
    if not isinstance(host, str) or not host or len(host) > 255 or not host.isascii():
        return None
    h = host.lower()
    if h.startswith("[") and h.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(h[1:-1]))
        except ValueError:
            return None
    if ":" in h:
        try:
            return str(ipaddress.IPv6Address(h))
        except ValueError:
            return None
    if h.endswith("."):
        h = h[:-1]
    try:
        return str(ipaddress.IPv4Address(h))
    except ValueError:
        pass
    return h if _dns_name(h) else None


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Rule:
    host: str  # the name, the IP literal, or the suffix of a wildcard
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def _parse_entry(entry: str) -> _Rule:
    """One entry → its rule; ValueError saying what is wrong."""
    if not entry.isascii() or not entry.isprintable() or entry != entry.strip() or " " in entry:
        raise ValueError("only letters, digits, '-', '.', a leading '*.' and ':port' may appear")
    if "/" in entry or "@" in entry:
        raise ValueError("a bare host name, not a URL: no scheme, path or user")
    if entry.count(":") > 1 or "[" in entry or "]" in entry:
        raise ValueError("at most one ':port' (IPv6 addresses are not supported here)")
    text = entry.lower()
    port: int | None = None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = text
    else:
        if not _PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if host.endswith("."):
        host = host[:-1]
    if _is_ipv4(host):
        if wildcard:
            raise ValueError("'*.' goes only in front of a domain name, not an IP address")
        return _Rule(str(ipaddress.IPv4Address(host)), False, port)
    if not _dns_name(host):
        raise ValueError("not a host name (labels of 1-63 letters, digits or '-', at most 253 characters) "
                         "or an IPv4 address; no scheme, path, user or other wildcard")
    return _Rule(host, wildcard, port)


def _canonical(rule: _Rule) -> str:
    return ("*." if rule.wildcard else "") + rule.host + (f":{rule.port}" if rule.port is not None else "")


@dataclass(frozen=True)
class Allowlist:
    """The hosts one agent may reach. Build it with `parse`; ``patterns`` are
    the entries in canonical form (lowercase, no trailing dot)."""

    patterns: tuple[str, ...] = ()
    _rules: tuple[_Rule, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(_parse_entry(p) for p in self.patterns))

    @classmethod
    def parse(cls, entries: object, where: str = "network.allow") -> Allowlist:
        """Validate ``entries`` (from agent.json); BadRequest names the bad entry and why."""
        if not isinstance(entries, list):
            raise BadRequest(f"{where} must be a list of host names, got {type(entries).__name__}")
        if len(entries) > MAX_ENTRIES:
            raise BadRequest(f"{where} has {len(entries)} entries; at most {MAX_ENTRIES}")
        canon: list[str] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, str):
                raise BadRequest(f"{where}[{i}] must be a string, got {type(entry).__name__}")
            try:
                rule = _parse_entry(entry)
            except ValueError as err:
                shown = repr(entry) if len(entry) <= 80 else repr(entry[:60]) + f"… ({len(entry)} characters)"
                raise BadRequest(f"{where}[{i}] {shown}: {err}") from None
            c = _canonical(rule)
            if c not in canon:
                canon.append(c)
        return cls(tuple(canon))

    def allows(self, host: str, port: int) -> bool:
        h = normalize_host(host)
        if h is None:
            return False
        return any(rule.matches(h, port) for rule in self._rules)


def parse_resolve(text: str) -> dict[str, str]:
    """``"name:port=addr,name2:port2=addr2"`` → ``{"name:port": addr}`` (like
    curl's --resolve, port and all).

    The port is required: an operator's mapping (an internal mirror, a test
    server on loopback) opens exactly that host and port, never every port of
    the address (on 127.0.0.1 that would be the dashboard too). Names are
    normalized host names (not IP literals), addresses IP literals (IPv6 with
    or without brackets), both canonical. Blank text → ``{}``.
    """
    out: dict[str, str] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        item = item.strip()
        target, sep, addr = item.partition("=")
        if not sep:
            raise ValueError(f"resolve entry {item!r} is not name:port=address")
        name, colon, port_text = target.strip().rpartition(":")
        if not colon or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"resolve entry {item!r} needs a port: name:port=address")
        host = normalize_host(name.strip())
        if host is None or not _dns_name(host):
            raise ValueError(f"resolve entry {item!r}: {name.strip()!r} is not a host name")
        a = addr.strip()
        if a.startswith("[") and a.endswith("]"):
            a = a[1:-1]
        try:
            ip = str(ipaddress.ip_address(a))
        except ValueError:
            raise ValueError(f"resolve entry {item!r}: {addr.strip()!r} is not an IP address") from None
        key = f"{host}:{int(port_text)}"
        if out.get(key, ip) != ip:
            raise ValueError(f"resolve: {key} is mapped twice ({out[key]} and {ip})")
        out[key] = ip
    return out
