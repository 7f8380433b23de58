"""/agents: start agents of known types, list them, look one up, send it a message."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from mas.actors.supervisor import new_agent_id
from mas.api.auth import Claims, require
from mas.api.problems import AUTH_PROBLEMS, Problem, problems
from mas.api.schemas import ID_PATTERN, AgentIn, AgentList, AgentOut, MessageIn, MessageOut
from mas.api.state import Gateway, gateway
from mas.errors import DuplicateAgent, UnknownAgent
from mas.messages import Message, parse_address
from mas.orchestrator import SPAWN, spawner_type

router = APIRouter(prefix="/agents", tags=["agents"])

_CLIENT_IDS = uuid.UUID("6f1c2b0e-8a59-4f3e-9a4c-2d4e5b6a7c8d")
"""Namespace of the message ids derived from a caller and a client-chosen id."""


def _caller_scoped(subject: str, client_id: str) -> str:
    return str(uuid.uuid5(_CLIENT_IDS, f"{subject}\x00{client_id}"))


GatewayDep = Annotated[Gateway, Depends(gateway)]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentOut,
    responses=problems(*AUTH_PROBLEMS, 400, 409, 413, 422, 502),
)
async def register_agent(
    spec: AgentIn,
    response: Response,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("agents:admin"))],
) -> AgentOut:
    """Start an agent (409 if the id is taken): here, or on a worker that hosts its type."""
    cls = gw.agent_classes.get(spec.type) if gw.hosts_agents else None
    if cls is not None:
        agent_id = (await gw.runtime.spawn(cls, id=spec.id)).id
        if gw.runtime.journal is not None:
            await gw.runtime.journal.flush()
    elif gw.settings.transport != "memory" or not gw.hosts_agents:
        if gw.agent_classes and spec.type not in gw.agent_classes:
            raise _unknown_type(gw, spec.type)
        agent_id = await _spawn_on_a_worker(gw, spec)
    else:
        raise _unknown_type(gw, spec.type)
    record = await gw.store.get_agent(agent_id)
    if record is None:
        raise Problem(
            502,
            "Agent Not Recorded",
            f"agent {agent_id!r} started, but its node does not record agents: run workers "
            "with persistence (not --no-persist) so the gateway can see them",
        )
    response.headers["Location"] = f"/agents/{agent_id}"
    return gw.agent_out(record)


def _unknown_type(gw: Gateway, agent_type: str) -> Problem:
    known = ", ".join(sorted(gw.agent_classes)) or "none"
    return Problem(
        422, "Unknown Agent Type", f"no agent class of type {agent_type!r} (known: {known})"
    )


async def _spawn_on_a_worker(gw: Gateway, spec: AgentIn) -> str:
    agent_id = spec.id or new_agent_id(spec.type)
    existing = await gw.store.get_agent(agent_id)
    if existing is not None and existing.live(gw.settings.heartbeat_ttl):
        raise DuplicateAgent(agent_id)
    request = Message(SPAWN, {"id": agent_id})
    try:
        reply = await gw.runtime.ask(f"type:{spawner_type(spec.type)}", request, timeout=10)
    except UnknownAgent:
        raise Problem(
            422,
            "Unknown Agent Type",
            f"no worker hosts agents of type {spec.type!r}: start one with "
            f"`mas worker --agents module:Class`",
        ) from None
    error = reply.payload.get("error")
    if error == "duplicate":
        raise DuplicateAgent(agent_id)
    if error is not None:
        detail = reply.payload.get("detail", error)
        raise Problem(
            502, "Agent Start Failed", f"the worker could not start {agent_id!r}: {detail}"
        )
    return agent_id


@router.get("/", response_model=AgentList, responses=problems(*AUTH_PROBLEMS, 422))
async def list_agents(
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("agents:read"))],
    type_: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AgentList:
    """Agents known to the system (running and stopped), filtered by type and status."""
    agents = await gw.store.list_agents(
        agent_type=type_, status=status_, limit=limit, offset=offset
    )
    items = [gw.agent_out(a) for a in agents]
    return AgentList(items=items, limit=limit, offset=offset)


@router.get("/{agent_id}", response_model=AgentOut, responses=problems(*AUTH_PROBLEMS, 404, 422))
async def get_agent(
    agent_id: str,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("agents:read"))],
) -> AgentOut:
    record = await gw.store.get_agent(agent_id)
    if record is None:
        raise Problem(404, "Unknown Agent", f"no agent with id {agent_id!r}")
    return gw.agent_out(record)


@router.post(
    "/{agent_id}/message",
    response_model=MessageOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": MessageOut, "description": "the reply, when ?wait= was given"},
        **problems(*AUTH_PROBLEMS, 400, 404, 409, 413, 422, 429, 502),
    },
)
async def send_message(
    agent_id: Annotated[str, Path(max_length=200, pattern=ID_PATTERN)],
    body: MessageIn,
    request: Request,
    response: Response,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("messages:write"))],
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="seconds to wait for a reply (504 if none came): under 0.001 is no "
            "wait, at most MAS_API__MAX_WAIT",
        ),
    ] = 0,
) -> MessageOut:
    """Send a message to an agent; with `?wait=N`, ask and return its reply (504 on timeout).

    A client's `id` makes a retry idempotent for that client only: the message id is derived
    from the caller and the client's id, so another caller choosing the same id sends a
    different message (and never receives the reply stored for the first).
    """
    wait = gw.applied_wait(wait)
    target = str(parse_address(f"agent:{agent_id}"))
    message = Message(
        body.type,
        body.payload,
        id=None if body.id is None else _caller_scoped(claims.subject, body.id),
        target=target,
        metadata=body.metadata if body.id is None else {**body.metadata, "client_id": body.id},
        trace_id=request.state.trace_id,
    )
    message.to_json(max_bytes=gw.settings.message_max_bytes)
    if wait > 0:
        reply = await gw.runtime.ask(target, message, timeout=wait)
        response.status_code = status.HTTP_200_OK
        return MessageOut.of(reply)
    await gw.runtime.tell(target, message)
    return MessageOut.of(message)
