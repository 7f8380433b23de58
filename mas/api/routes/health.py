"""/livez, /readyz and /metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from mas.api.auth import Claims, admit
from mas.api.state import Gateway, gateway
from mas.monitoring.readiness import READY_WITHIN, is_ready, readiness

router = APIRouter(tags=["health"])

GatewayDep = Annotated[Gateway, Depends(gateway)]

_READER = frozenset({"metrics:read"})


async def health_access(request: Request) -> Claims | None:
    """Health routes are public unless MAS_AUTH__PUBLIC_HEALTH=false.

    The token is read here, not through a security dependency, so the OpenAPI document does
    not declare public routes bearer-protected (`create_app` declares them when they are not).
    """
    if request.app.state.gateway.settings.auth.public_health:
        return None
    return await admit(request, _READER)


async def metrics_access(request: Request) -> Claims | None:
    """/metrics is public unless MAS_AUTH__PUBLIC_METRICS=false (see `health_access`)."""
    if request.app.state.gateway.settings.auth.public_metrics:
        return None
    return await admit(request, _READER)


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="runtime, transport, store: `ok` or why not")


@router.get("/livez", dependencies=[Depends(health_access)], response_model=Liveness)
async def livez() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    dependencies=[Depends(health_access)],
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: `checks` says why"}},
)
async def readyz(gw: GatewayDep) -> JSONResponse:
    """Ready when the runtime runs, the broker takes messages and the store answers.

    503 otherwise, with the reason: a gateway that cannot reach its broker or database takes
    no tasks. Answers within a second however the services behave (a blackholed database
    is reported as not answering, not waited for).
    """
    checks = await readiness(gw.runtime, gw.journal, READY_WITHIN)
    ready = is_ready(checks)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


@router.get(
    "/metrics",
    dependencies=[Depends(metrics_access)],
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(await request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
