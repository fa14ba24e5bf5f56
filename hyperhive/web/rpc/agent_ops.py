"""The ops an agent's own socket serves. The socket is the caller's identity:
no request carries a "from" the daemon trusts."""

from __future__ import annotations

from typing import Any

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.events import ContainerActivity, Hub
from hyperhive.actors.naps import Naps
from hyperhive.actors.refs import BrokerRef, QuestionsRef
from hyperhive.errors import BadRequest, Forbidden, Unavailable
from hyperhive.names import AgentName, validate_recipient
from hyperhive.store.reserve import Reserve
from hyperhive.web.operator import permissions
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.web.tables.heartbeats import REPORTED, Heartbeats
from hyperhive.web.tables.sends import SendBatcher, sent_reply
from hyperhive.web.tables.spend import Spend
from hyperhive.web.tables.turn_slots import TurnSlots
from hyperhive.wire import Grants, Heartbeat, InboxRow, Permission, Ping, Recent, Recv, Send, TurnDone, TurnSlot
from hyperhive.workspace_pulls import Pulls

__all__ = ["agent_ops", "rows_out"]

REPLY_SLACK = 10.0  # a parked recv's reply may take this long past its wait


def rows_out(rows: list[InboxRow]) -> list[dict[str, Any]]:
    return [r.to_wire() for r in rows]


def agent_ops(
    agent: AgentName, broker: BrokerRef, sends: SendBatcher, recv_cap: float, manager: bool = False,
    beats: Heartbeats | None = None, hub: Hub | None = None, slots: TurnSlots | None = None,
    questions: QuestionsRef | None = None, permission_ttl: float = 600.0, pulls: Pulls | None = None,
    spend: Spend | None = None, reserve: Reserve | None = None, naps: Naps | None = None,
) -> dict[str, Op]:
    beats = beats or Heartbeats(5.0)
    slots = slots or TurnSlots(0)

    def give_back(reported: float | None = None) -> None:
        slots.release(agent)
        if spend is not None:
            spend.turn_ended(agent, reported)

    # What the harness's system recvs take is marked taken in the same commit (issue 16); its
    # turn_slot and turn_done say when the turn on them starts and ends (`broker_taken`), and
    # a harness that goes away first has them delivered again.

    async def send(req: Send) -> dict[str, Any]:
        to = validate_recipient(req.to)
        if reserve is not None:  # an agent cannot take the store's last space (issue 16)
            reserve.check_agent_write(agent)
        return sent_reply(await sends.send(agent, to, req.body, req.idempotency_key))

    def requeue(rows: list[InboxRow]) -> None:
        if rows:
            Handle(broker).tell(Broker.requeue, [r.id for r in rows])

    async def recv(req: Recv) -> dict[str, Any]:
        wait = req.wait_seconds
        if wait is not None and wait < 0:
            raise BadRequest(f"wait_seconds must be >= 0, got {wait}")
        timeout = min(recv_cap, wait if wait is not None else recv_cap) + REPLY_SLACK
        if req.system and spend is not None:  # over budget: the harness takes no message (issue 15)
            await spend.wait_admitted(agent)
        if req.system and naps is not None:  # it waits for work: idle from now (issue 17: hibernation)
            naps.turn(agent, False)
        rows = await Handle(broker).within(timeout, on_orphan=requeue).ask(Broker.recv, agent, wait, req.system)
        return {"messages": rows_out(rows)}

    def recv_unsent(response: dict[str, Any]) -> None:
        requeue([InboxRow.from_wire(m) for m in response.get("messages", [])])

    async def recent(req: Recent) -> dict[str, Any]:
        if req.limit < 1:
            raise BadRequest(f"limit must be >= 1, got {req.limit}")
        # At most about 1 MiB: the oldest rows are left out, and the reply says so.
        rows, truncated = await Handle(broker).ask(Broker.recent_page, agent, req.limit)
        return {"messages": rows_out(rows), "truncated": truncated}

    async def heartbeat(req: Heartbeat) -> dict[str, Any]:
        if req.state not in REPORTED:
            raise BadRequest(f"state must be one of {', '.join(REPORTED)}, got {req.state!r}")
        if beats.record(agent, req.state) and hub is not None:
            hub.publish(ContainerActivity(agent, req.state))
        return {"next_in": beats.interval}

    async def turn_slot(req: TurnSlot) -> dict[str, Any]:
        if req.kind not in ("turn", "compact"):
            raise BadRequest(f"kind must be turn or compact, got {req.kind!r}")
        if spend is not None:  # over budget (the agent's or the fleet's): no turn starts (issue 15)
            await spend.wait_admitted(agent)
        await slots.acquire(agent)
        if req.kind == "turn":
            Handle(broker).tell(Broker.turn_started, agent)
        if spend is not None and not spend.in_turn(agent):
            spend.turn_started(agent)
        if naps is not None:  # no hibernation while it works (issue 17)
            naps.turn(agent, True)
        return {"granted": True}

    async def turn_done(req: TurnDone) -> dict[str, Any]:
        Handle(broker).tell(Broker.turn_done, agent)
        cost = req.cost_usd
        if cost is not None and not (isinstance(cost, int | float) and 0 <= cost <= 1e6):
            give_back()  # the slot goes back whatever the report says
            raise BadRequest(f"cost_usd must be a number of dollars in 0..1000000, got {cost!r}")
        give_back(cost)
        if pulls is not None:  # a turn's end: its branch back into the operator's repo (issue 14), off the loop
            pulls.after_turn(agent)
        return {"released": True}

    async def ping(req: Ping) -> dict[str, Any]:
        # The recv cap goes with it: `hive mcp` tells the model the longest wait it may ask for.
        return {"agent": agent, "role": "manager" if manager else "agent", "recv_cap_seconds": recv_cap}

    # --- tool permissions (issue 14): the CLI's prompt tool, and the grants it starts a turn with
    async def permission(req: Permission) -> dict[str, Any]:
        if questions is None:
            raise Unavailable("this daemon asks no permission questions")
        # Parks until the operator decides (at most the TTL, then `deny`); a closed
        # connection cancels the request, and with it the question.
        return await permissions.permission(questions, agent, req.tool_name, req.input_json, req.tool_use_id,
                                            permission_ttl)

    async def grants(req: Grants) -> dict[str, Any]:
        if req.name is not None and req.name != agent:  # the socket is the identity: only its own
            raise Forbidden(f"{agent} may see only its own grants")
        # The TTL goes with them: the harness waits that long for a CLI silent on a question.
        out = {"agent": agent, "tools": []} if questions is None else await permissions.grants(questions, agent)
        return {**out, "ttl_seconds": permission_ttl}

    return {
        "permission": Op(permission),
        "grants": Op(grants),
        "send": Op(send, inline=True),
        "recv": Op(recv, unsent=recv_unsent, inline=True),  # its deadline is a loop timer (bridge.call), no Task
        "recent": Op(recent, serial=True),  # one reply of up to 1 MiB built at a time per connection
        "ping": Op(ping, inline=True),
        "heartbeat": Op(heartbeat, inline=True),
        # A grant the harness never heard of is given back at once.
        "turn_slot": Op(turn_slot, unsent=lambda _resp: give_back()),
        "turn_done": Op(turn_done, inline=True),
    }
