"""/metrics, /livez and /readyz for a process that has no gateway (`mas worker`).

Prometheus scrapes every worker, and an orchestrator probes it, on a port of its own. The
server runs in the worker's event loop (the collector reads the runtime's counters without
a lock, which a thread could not do) and outlives the runtime it reports on: it answers
while the worker starts and drains, with /readyz saying 503 until the runtime runs and
again once it stops.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import anyio

from mas.monitoring.readiness import READY_WITHIN, is_ready, readiness

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from mas.persistence.journal import StoreJournal
    from mas.runtime import Runtime

__all__ = ["health_app", "serve_health"]


def health_app(runtime: Runtime) -> Starlette:
    """The three routes, about `runtime` (which may not be started yet, or be stopped)."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from mas.monitoring.metrics import RuntimeMetrics

    metrics = RuntimeMetrics(runtime)

    async def metrics_route(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await readiness(runtime, _store_journal(runtime), READY_WITHIN)
        ready = is_ready(checks)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "1"},
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics_route),
            Route("/livez", livez),
            Route("/readyz", readyz),
        ]
    )


def _store_journal(runtime: Runtime) -> StoreJournal | None:
    """The runtime's journal when it records to a database (the store check needs one)."""
    journal = runtime.journal
    if journal is None:
        return None
    from mas.persistence.journal import StoreJournal

    return journal if isinstance(journal, StoreJournal) else None


@asynccontextmanager
async def serve_health(runtime: Runtime, sock: socket.socket) -> AsyncIterator[None]:
    """Serve `health_app(runtime)` on the listening `sock` until the block exits."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # the worker owns SIGTERM and SIGINT: they drain it, then this stops

    config = uvicorn.Config(health_app(runtime), log_config=None, access_log=False, lifespan="off")
    server = _Server(config)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            try:
                yield
            finally:
                server.should_exit = True
    except BaseExceptionGroup as failed:
        # One error (the block's, e.g. a broker it cannot reach, or the server's) reaches
        # the caller as itself, as it would without this server, not wrapped in a group.
        if len(failed.exceptions) == 1:
            error = failed.exceptions[0]
            raise error from error.__cause__
        raise
