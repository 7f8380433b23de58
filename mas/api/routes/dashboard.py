"""/dashboard: a live page of agents, tasks and runtime counters, and a form to submit a task.

The page itself is static and public (it holds no data); everything it shows comes from
`/dashboard/data`, which needs a token with `agents:read` and `tasks:read`. The page takes the
token from its URL fragment (`/dashboard#token=...`, never sent to the server in a request
line or logged) or asks for it, and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from mas.api.auth import Claims, require
from mas.api.problems import AUTH_PROBLEMS, problems
from mas.api.schemas import DeadLetterOut, TaskOut
from mas.api.state import Gateway, gateway
from mas.api.tasks import owner_filter

router = APIRouter(tags=["dashboard"])
_log = structlog.get_logger("mas.api.dashboard")

GatewayDep = Annotated[Gateway, Depends(gateway)]


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
async def dashboard_data(
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("agents:read", "tasks:read"))],
) -> dict[str, Any]:
    """What the dashboard shows: this node's counters, agents, the caller's tasks (all
    callers' with `tasks:admin`): counts and the most recent; and, with
    `dead_letters:read`, the dead letters not settled yet (else `dead_letters` is null).

    A stored row the API model refuses (a value written by another version, say) comes as
    `{"id": ..., "unreadable": why}` in its list: the page shows that row as such, and the
    rest as usual."""
    agents = await gw.store.list_agents(limit=200)
    owner = owner_filter(claims)
    recent = await gw.store.list_tasks(created_by=owner, limit=20)
    letters = None
    if "dead_letters:read" in claims.scopes:
        dead = await gw.dead_letters.list(status="dead", limit=20)
        letters = [_shown(letter.id, DeadLetterOut.of, letter) for letter in dead]
    return {
        "node_id": gw.runtime.node_id,
        "transport": gw.settings.transport,
        "runtime": gw.runtime.stats(),
        "task_counts": await gw.store.count_tasks(created_by=owner),
        "agents": [_shown(agent.id, gw.agent_out, agent) for agent in agents],
        "tasks": [_shown(task.id, TaskOut.of, task) for task in recent],
        "dead_letters": letters,
    }


def _shown(item_id: str, model: Callable[[Any], BaseModel], record: Any) -> dict[str, Any]:
    """`record` as the API shows it, or what makes it unreadable (never a failed page)."""
    try:
        return model(record).model_dump(mode="json")
    except (ValidationError, ValueError, TypeError) as exc:
        _log.warning("dashboard_row_unreadable", id=item_id, error=str(exc))
        return {"id": item_id, "unreadable": f"{type(exc).__name__}: {exc}"[:500]}
