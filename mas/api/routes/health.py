"""/livez, /readyz and /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from mas.api.auth import Claims, require
from mas.api.state import Gateway, gateway

router = APIRouter(tags=["health"])

GatewayDep = Annotated[Gateway, Depends(gateway)]


_reader = require("metrics:read")
_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


async def health_access(request: Request, credentials: Credentials) -> Claims | None:
    """Health routes are public unless MAS_AUTH__PUBLIC_HEALTH=false."""
    if request.app.state.gateway.settings.auth.public_health:
        return None
    return await _reader(request, credentials)


async def metrics_access(request: Request, credentials: Credentials) -> Claims | None:
    """/metrics is public unless MAS_AUTH__PUBLIC_METRICS=false."""
    if request.app.state.gateway.settings.auth.public_metrics:
        return None
    return await _reader(request, credentials)


@router.get("/livez", dependencies=[Depends(health_access)])
async def livez() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=[Depends(health_access)])
async def readyz(gw: GatewayDep) -> JSONResponse:
    """Ready when the runtime runs, its transport is connected and the store answers.

    503 otherwise, with the reason: a gateway that cannot reach its broker takes no tasks.
    """
    checks: dict[str, Any] = {"runtime": "ok" if gw.runtime.running else "stopped"}
    checks["transport"] = "ok" if gw.runtime.transport.ready else "disconnected"
    try:
        async with gw.store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["store"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        checks["store"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", dependencies=[Depends(metrics_access)])
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
