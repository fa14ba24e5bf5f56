"""The operator service: the one API behind every operator surface.

The dashboard's POSTs (``web/dashboard/actions.py``), the admin socket's ops
(``web/rpc/admin_ops.py``, ``gate_ops.py``, ``journal_ops.py``) and the
manager's tools (its own socket) are thin adapters: they parse their own
transport (a form, a JSON line), call a function here, and write what it
returns. So every check and every reply shape is written once, and each
surface refuses the same bad input with the same error code, as mopidy's
frontends all call one ``core``.

- ``checks``: pure validation (ids, bodies, limits, reasons, spawn configs,
  lifecycle rules) and the snapshot-to-wire helper;
- ``lifecycle``: start/stop/restart/rebuild/kill (the manager never acts on itself);
- ``messages``: send, inbox, mark read;
- ``gate``: questions, answers, approvals, spawn requests, the manager's requests;
- ``agents``: spawn, destroy, revive, purge, tombstones, ls, journal;
- ``counts``: how many rows a listing left out (its ``more``);
- ``permissions``: tool permissions (the permission op, grants, revoke_tool).

Each function takes the actors it uses (typed proxies) and returns the reply
body, ``ok`` aside. Every listing carries ``more``: how many rows it left
out, 0 when none.
"""

from __future__ import annotations

from hyperhive.web.operator import agents, checks, gate, lifecycle, messages, permissions

__all__ = ["agents", "checks", "gate", "lifecycle", "messages", "permissions"]
