"""The gateway's app factory: run it alone (`mas up`) or mount it in your FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mas.actors.agent import Agent
from mas.actors.runtime import Runtime
from mas.api.admission import Admission
from mas.api.auth import check_secret
from mas.api.metrics import RuntimeMetrics
from mas.api.problems import install_problem_handlers
from mas.api.routes import agents, dashboard, health, tasks
from mas.api.state import Gateway
from mas.api.tracing import TraceMiddleware
from mas.config import Settings
from mas.errors import ConfigError
from mas.persistence.journal import StoreJournal

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
            _attach(app, settings, runtime, classes, host_agents)
            yield
            return
        own = Runtime(settings.model_copy(update={"persist": True}))
        async with own:
            _attach(app, settings, own, classes, host_agents)
            for cls in starting:
                await own.spawn(cls, id=cls.type)
            yield

    app = FastAPI(
        title="mas gateway",
        version=_version(),
        summary="Submit tasks to agents, read results, manage agents.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.add_middleware(Admission, max_bytes=settings.message_max_bytes)
    app.add_middleware(TraceMiddleware)
    for router in (tasks.router, agents.router, health.router, dashboard.router):
        app.include_router(router)
    return app


def _attach(
    app: FastAPI,
    settings: Settings,
    runtime: Runtime,
    classes: dict[str, type[Agent]],
    host_agents: bool,
) -> None:
    journal = runtime.journal
    if not isinstance(journal, StoreJournal):
        raise ConfigError(
            "the gateway needs a runtime that persists: create it with MAS_PERSIST=true "
            "or journal=StoreJournal(store)"
        )
    gateway = Gateway(settings, runtime, journal, classes, hosts_agents=host_agents)
    metrics = RuntimeMetrics(runtime)
    runtime.add_task_listener(metrics.on_task_ended)
    app.state.gateway = gateway
    app.state.settings = settings
    app.state.metrics = metrics


def _version() -> str:
    from mas import __version__

    return __version__
