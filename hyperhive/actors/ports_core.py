"""Sticky agent web ports (F20), the pure part: hash a name to a port and
probe forward past ports other agents claim.

FNV-1a mod 900 collides for about 1 pair in 1000; a probe past the claimed
ports fixes that, and the port file makes the choice stick.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["PORT_SPAN", "choose_port", "fnv1a_32", "hash_port"]

PORT_SPAN = 900
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def hash_port(name: str, base: int, span: int = PORT_SPAN) -> int:
    """The port a name hashes to: ``base + fnv1a(name) % span``."""
    return base + fnv1a_32(name.encode()) % span


def choose_port(
    name: str, claimed: Collection[int], base: int, span: int = PORT_SPAN
) -> tuple[int, bool]:
    """The first port from the name's hash onward (wrapping inside the range)
    that no other agent claims.

    Returns ``(port, found)``; when every port of the range is claimed,
    ``found`` is False and the port is the hash (the caller warns, and the
    bind fails loudly later rather than two agents silently sharing).
    """
    start = hash_port(name, base, span) - base
    taken = set(claimed)
    for i in range(span):
        port = base + (start + i) % span
        if port not in taken:
            return port, True
    return base + start, False
