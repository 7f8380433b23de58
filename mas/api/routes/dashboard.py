"""/dashboard: a live page of agents, tasks and runtime counters, and a form to submit a task.

The page itself is static and public (it holds no data); what it shows comes from
`/dashboard/events` (the same body as `/dashboard/data`, pushed as it changes), which needs a
token with `agents:read` and `tasks:read`, and, for the tasks an operator filters or opens,
from the task routes (`/tasks/?status=...`, `/tasks/{id}/tree`, `/tasks/{id}/messages`),
read with the same token. The page takes the
token from its URL fragment (`/dashboard#token=...`, never sent to the server in a request
line or logged) or asks for it, and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from mas import __version__
from mas.api.auth import Claims, require
from mas.api.problems import AUTH_PROBLEMS, problems
from mas.api.schemas import DeadLetterOut, TaskOut
from mas.api.state import Gateway, gateway
from mas.api.streams import held_event_stream
from mas.api.tasks import owner_filter
from mas.errors import MasError

router = APIRouter(tags=["dashboard"])
_log = structlog.get_logger("mas.api.dashboard")

GatewayDep = Annotated[Gateway, Depends(gateway)]
ReaderDep = Annotated[Claims, Depends(require("agents:read", "tasks:read"))]

TICK = 1.0
"""Seconds between two looks at what the dashboard shows, per open event stream."""
KEEPALIVE = 15.0
"""Seconds of an unchanged picture after which the stream sends a comment line."""


@cache
def _page() -> str:
    return files("mas.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")


@cache
def _policy() -> str:
    """The page's Content-Security-Policy: its own inline script and style (by hash), calls
    to this origin only, and no framing (clickjacking the submit form).

    Hashes rather than 'unsafe-inline': a value that slipped into the page unescaped could
    not run as script.
    """
    page = _page()

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (hashlib.sha256(body.encode()).digest() for body in bodies)
        return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(
        _page(),
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _policy(),
            "X-Frame-Options": "DENY",  # for browsers older than frame-ancestors
        },
    )


@router.get("/dashboard/data", responses=problems(*AUTH_PROBLEMS))
async def dashboard_data(gw: GatewayDep, claims: ReaderDep) -> dict[str, Any]:
    """What the dashboard shows, once (the page follows `/dashboard/events` instead).

    This node's counters and live supervision tree; the cluster's nodes (each with its
    supervision tree and restarts per agent, as its agents' records draw it), agents and
    agent types (with the broker's queue depth per type) from the agents' records; the
    caller's tasks (all callers' with `tasks:admin`): counts and the most recent; and, with
    `dead_letters:read`, the dead letters not settled yet (else `dead_letters` is null).

    A stored row the API model refuses (a value written by another version, say) comes as
    `{"id": ..., "unreadable": why}` in its list: the page shows that row as such, and the
    rest as usual.
    """
    return await _snapshot(gw, claims)


_DASHBOARD_EVENT = {
    "description": "one event: `snapshot`, the body /dashboard/data answers, whenever it "
    "changed; or `problem`, why the store could not be read just now",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["snapshot", "problem"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


@router.get(
    "/dashboard/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _DASHBOARD_EVENT}}},
        **problems(*AUTH_PROBLEMS, 422, 429),
    },
)
async def dashboard_events(
    request: Request,
    gw: GatewayDep,
    claims: ReaderDep,
    timeout: Annotated[float, Query(gt=0, le=3600, description="close after N seconds")] = 300,
) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` event (the body `/dashboard/data` answers) at once
    and whenever it changes (looked at every second), a comment line when nothing changed
    for 15 s (proxies keep the stream open), and a `problem` event when the store cannot be
    read for a moment; the stream stays open. It closes after `timeout` seconds, or when
    the gateway starts to stop: the page opens another (to the restarted gateway).

    Each such stream re-reads the picture every second: it counts towards the caller's
    `MAS_API__MAX_STREAMS_PER_CALLER` open streams (429 past it), as task streams do."""
    slot = gw.streams.open(None, claims.subject)
    events = _events(request, gw, claims, timeout)
    return held_event_stream(slot, events, {"X-Accel-Buffering": "no"})


async def _events(
    request: Request, gw: Gateway, claims: Claims, timeout: float
) -> AsyncIterator[bytes]:
    """The dashboard's events for `timeout` seconds (see `dashboard_events`)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last, said = b"", loop.time()
    while True:
        try:
            body = json.dumps(await _snapshot(gw, claims), default=str).encode()
        except MasError as exc:
            body = json.dumps({"detail": str(exc)}).encode()
            yield b"event: problem\ndata: " + body + b"\n\n"
        else:
            if body != last:
                yield b"event: snapshot\ndata: " + body + b"\n\n"
                last, said = body, loop.time()
            elif loop.time() - said >= KEEPALIVE:
                yield b": nothing changed\n\n"
                said = loop.time()
        left = end - loop.time()
        if left <= 0 or request.app.state.draining:
            return  # its time is up, or the gateway stops: the page opens another
        await asyncio.sleep(min(TICK, left))


async def _snapshot(gw: Gateway, claims: Claims) -> dict[str, Any]:
    runtime = gw.runtime
    records = await gw.store.list_agents(limit=500)
    agents = [_shown(agent.id, gw.agent_out, agent) for agent in records]
    owner = owner_filter(claims)
    recent = await gw.store.list_tasks(created_by=owner, limit=20)
    letters = None
    if "dead_letters:read" in claims.scopes:
        dead = await gw.dead_letters.list(status="dead", limit=20)
        letters = [_shown(letter.id, DeadLetterOut.of, letter) for letter in dead]
    return {
        "node_id": runtime.node_id,
        "transport": gw.settings.transport,
        "version": __version__,
        "runtime": runtime.stats(),
        "task_counts": await gw.store.count_tasks(created_by=owner),
        "nodes": _nodes(agents),
        "types": await _types(gw, agents),
        "supervision": _tree(runtime.root.describe(), runtime) if runtime.root else None,
        "agents": agents,
        "tasks": [_shown(task.id, TaskOut.of, task) for task in recent],
        "dead_letters": letters,
    }


def _nodes(agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes the agents' records name: their agents, live ones, latest heartbeat, and
    their supervision tree as the records draw it (`_recorded_tree`)."""
    nodes: dict[str, dict[str, Any]] = {}
    members: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        node_id = agent.get("node_id")
        if not node_id or "unreadable" in agent:
            continue
        node = nodes.setdefault(
            node_id, {"node_id": node_id, "agents": 0, "live": 0, "last_heartbeat": None}
        )
        members.setdefault(node_id, []).append(agent)
        node["agents"] += 1
        node["live"] += bool(agent.get("live"))
        beat = agent.get("last_heartbeat")
        if beat and (node["last_heartbeat"] is None or beat > node["last_heartbeat"]):
            node["last_heartbeat"] = beat
    for node_id, node in nodes.items():
        node["supervision"] = _recorded_tree(members[node_id])
    return sorted(nodes.values(), key=lambda node: str(node["node_id"]))


def _recorded_tree(agents: list[dict[str, Any]]) -> dict[str, Any]:
    """A node's supervision tree from its agents' records: each record names the path of
    its agent's supervisor (`root/team`) and its restarts, written by the node at each
    start and restart, so any gateway draws any node's tree (records written before they
    said so hang from the root)."""
    root: dict[str, Any] = {"id": "root", "children": []}
    supervisors = {"root": root}
    for agent in agents:
        metadata = agent.get("metadata") or {}
        path = metadata.get("supervisor")
        parent = root
        if isinstance(path, str) and path:
            walked = ""
            for part in path.split("/")[1:]:  # the first is the node's root
                walked += "/" + part
                if walked not in supervisors:
                    supervisors[walked] = {"id": part, "children": []}
                    parent["children"].append(supervisors[walked])
                parent = supervisors[walked]
        restarts = metadata.get("restarts")
        parent["children"].append(
            {
                "id": agent.get("id"),
                "type": agent.get("type"),
                "status": agent.get("status"),
                "live": bool(agent.get("live")),
                "restarts": restarts if isinstance(restarts, int) else None,
            }
        )
    return root


async def _types(gw: Gateway, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per agent type: live agents in the cluster, this node's agents, mailboxes and
    counters, and the messages waiting in the type's broker queue (None: no queue; -1: the
    broker could not be asked)."""
    live: dict[str, int] = {}
    for agent in agents:
        if "unreadable" not in agent and agent.get("type"):
            live[agent["type"]] = live.get(agent["type"], 0) + bool(agent.get("live"))
    here = gw.runtime.agents_by_type()
    counters = gw.runtime.counters
    out = []
    for agent_type in sorted(set(live) | set(here)):
        local, mailbox = here.get(agent_type, (0, 0))
        counted = counters.get(agent_type)
        out.append(
            {
                "type": agent_type,
                "live": live.get(agent_type, 0),
                "here": local,
                "mailbox": mailbox,
                "broker": await gw.backlogs.depth(f"type:{agent_type}"),
                "handled": counted.succeeded if counted else 0,
                "failed": counted.failed if counted else 0,
                "restarts": counted.restarts if counted else 0,
            }
        )
    return out


def _tree(node: dict[str, Any], runtime: Any) -> dict[str, Any]:
    """A supervisor's description with its agents' state (type, status, mailbox)."""
    children = []
    for child in node.get("children", []):
        if "children" in child:
            children.append(_tree(child, runtime))
            continue
        cell = runtime.local_cell(child["id"])
        children.append(cell.describe() if cell is not None else child)
    return {**node, "children": children}


def _shown(item_id: str, model: Callable[[Any], BaseModel], record: Any) -> dict[str, Any]:
    """`record` as the API shows it, or what makes it unreadable (never a failed page)."""
    try:
        return model(record).model_dump(mode="json")
    except (ValidationError, ValueError, TypeError) as exc:
        _log.warning("dashboard_row_unreadable", id=item_id, error=str(exc))
        return {"id": item_id, "unreadable": f"{type(exc).__name__}: {exc}"[:500]}
