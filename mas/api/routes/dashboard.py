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
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from mas.api.auth import Claims, require
from mas.api.problems import AUTH_PROBLEMS, problems
from mas.api.schemas import TaskOut
from mas.api.state import Gateway, gateway
from mas.api.tasks import owner_filter

router = APIRouter(tags=["dashboard"])

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
    """What the dashboard shows: this node's counters, agents, and the caller's tasks (all
    callers' with `tasks:admin`): counts and the most recent."""
    agents = await gw.store.list_agents(limit=200)
    owner = owner_filter(claims)
    recent = await gw.store.list_tasks(created_by=owner, limit=20)
    return {
        "node_id": gw.runtime.node_id,
        "transport": gw.settings.transport,
        "runtime": gw.runtime.stats(),
        "task_counts": await gw.store.count_tasks(created_by=owner),
        "agents": [gw.agent_out(agent).model_dump(mode="json") for agent in agents],
        "tasks": [TaskOut.of(task).model_dump(mode="json") for task in recent],
    }
