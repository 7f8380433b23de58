"""The gateway's app factory: run it alone (`mas up`) or mount it in your FastAPI app."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from mas.actors.agent import Agent
from mas.api.access_log import AccessLog
from mas.api.admission import Admission
from mas.api.auth import check_secret
from mas.api.headers import SecurityHeaders, cors_options
from mas.api.problems import AUTH_PROBLEMS, ProblemDetails, install_problem_handlers, problems
from mas.api.routes import agents, dashboard, dead_letters, health, tasks
from mas.api.routes.docs import mount_docs
from mas.api.state import Gateway
from mas.api.tracing import TraceMiddleware
from mas.config import Settings
from mas.errors import ConfigError
from mas.monitoring.metrics import RuntimeMetrics
from mas.persistence.journal import StoreJournal
from mas.runtime import Runtime

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    agent_classes: Iterable[type[Agent]] = (),
    start_agents: Iterable[type[Agent]] = (),
    *,
    host_agents: bool = True,
) -> FastAPI:
    """Build the gateway.

    Without `runtime`, the app's lifespan starts one (persisting to MAS_DATABASE_URL) and
    stops it on shutdown; with one, the caller owns its lifecycle and it must have been
    created with a `StoreJournal` (the gateway reads tasks from that store).
    `agent_classes` are the types `POST /agents/` may start; `start_agents` are started
    (one each, id = type) when the app starts its own runtime. With `host_agents` off (`mas
    api`), the gateway runs no agent itself: `POST /agents/` starts them on workers.

    Raises:
        ConfigError: the configured JWT secret is a placeholder or too short (without one,
            every request that needs a token is a 503).
    """
    settings = settings if settings is not None else Settings()
    if settings.auth.jwt_secret is not None:
        check_secret(settings.auth.jwt_secret.get_secret_value())
    starting = list(start_agents)
    classes = {cls.type: cls for cls in [*agent_classes, *starting]}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            gateway = _attach(app, settings, runtime, classes, host_agents)
            try:
                yield
            finally:
                await gateway.close()
            return
        own = Runtime(settings.model_copy(update={"persist": True}))
        async with own:
            gateway = _attach(app, settings, own, classes, host_agents)
            try:
                for cls in starting:
                    await own.spawn(cls, id=cls.type)
                yield
            finally:
                await gateway.close()

    app = _GatewayApp(
        title="mas gateway",
        version=_version(),
        summary="Submit tasks to agents, read results, manage agents.",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by `mount_docs`, below
        redoc_url=None,
        **_without_fastapi_spans(),
    )
    app.contract = _contract(settings, classes)
    app.state.draining = False  # set when the server starts to stop (`mas.cli.serving.serve`)
    install_problem_handlers(app)
    # The last added runs first: trace ids, the access log (which sees every answer,
    # Admission's 401 and 413 included), CORS (answers a preflight and marks a 401 from
    # admission readable for the page that sent it), then Admission. SecurityHeaders
    # wraps even these (`_GatewayApp`).
    app.add_middleware(Admission, max_bytes=settings.message_max_bytes)
    if settings.api.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings.api.cors_origins))
    if settings.api.access_log:
        app.add_middleware(AccessLog)
    app.add_middleware(TraceMiddleware)
    for router in (
        tasks.router,
        agents.router,
        dead_letters.router,
        health.router,
        dashboard.router,
    ):
        app.include_router(router)
    mount_docs(app)
    return app


def _without_fastapi_spans() -> dict[str, Any]:
    """FastAPI's own request spans off (its versions that make them): the gateway's
    TraceMiddleware makes the request's span, whose trace id is the X-Trace-Id the logs show
    even when the client sent none, which FastAPI cannot know; one span per request."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "operation_spans": False}}
    return {}


class _GatewayApp(FastAPI):
    """FastAPI with the security headers outside everything, the 500 handler included, and
    an OpenAPI document that says what this gateway, as configured, does."""

    contract: Callable[[dict[str, Any]], None] = staticmethod(lambda document: None)

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            self.contract(document)
            self.openapi_schema = document
        return self.openapi_schema


def _contract(settings: Settings, agent_types: Iterable[str]) -> Callable[[dict[str, Any]], None]:
    """What FastAPI cannot know from the routes alone, written into the OpenAPI document.

    The problem+json schema (`problems()` refers to it), the longest `?wait=` this gateway
    applies, the health routes that need a token when they are not public, and the agent
    types `POST /agents/` starts when the gateway knows them all.
    """
    types = sorted(agent_types)
    private = {
        "/livez": not settings.auth.public_health,
        "/readyz": not settings.auth.public_health,
        "/metrics": not settings.auth.public_metrics,
    }

    def apply(document: dict[str, Any]) -> None:
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = ProblemDetails.model_json_schema()
        for path, operations in document["paths"].items():
            for operation in operations.values():
                for parameter in operation.get("parameters", ()):
                    if parameter["in"] == "query" and parameter["name"] == "wait":
                        parameter["schema"]["maximum"] = settings.api.max_wait
                if private.get(path):
                    operation["security"] = [{"bearer": []}]
                    operation["responses"].update(problems(*AUTH_PROBLEMS))
        if types and "AgentIn" in schemas:
            schemas["AgentIn"]["properties"]["type"]["enum"] = types

    return apply


def _attach(
    app: FastAPI,
    settings: Settings,
    runtime: Runtime,
    classes: dict[str, type[Agent]],
    host_agents: bool,
) -> Gateway:
    journal = runtime.journal
    if not isinstance(journal, StoreJournal):
        raise ConfigError(
            "the gateway needs a runtime that persists: create it with MAS_PERSIST=true "
            "or journal=StoreJournal(store)"
        )
    gateway = Gateway(settings, runtime, journal, classes, hosts_agents=host_agents)
    metrics = RuntimeMetrics(runtime)
    app.state.gateway = gateway
    app.state.settings = settings
    app.state.metrics = metrics
    return gateway


def _version() -> str:
    from mas import __version__

    return __version__
