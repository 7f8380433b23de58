"""Every error reaches the client as problem+json with a status it can act on.

A service mas depends on failing is the server's trouble (5xx; 503 + Retry-After when a retry
can help, 504 when a bounded wait ran out), never the client's (4xx): a 400 tells a client
not to retry what would have worked a moment later. Errors map by layer: an error nobody
listed gets its layer's status.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from mas.api.problems import PROBLEM_JSON, install_problem_handlers
from mas.errors import (
    AgentStartError,
    AgentStopped,
    AskTimeout,
    ConfigError,
    DeliveryError,
    DuplicateAgent,
    HandlerError,
    HandlerReturnError,
    IdempotencyKeyReused,
    InvalidAddress,
    InvalidMessage,
    MailboxFull,
    MasError,
    MessageTooLarge,
    QueueFull,
    RedisUnavailable,
    RuntimeNotRunning,
    SchemaOutdated,
    ServiceUnavailable,
    StoreTimeout,
    StoreUnavailable,
    SupervisorEscalation,
    TaskFinished,
    TaskIdTaken,
    TransportError,
    UnknownAgent,
    UnknownCapability,
    UnknownTask,
    UsageError,
)

pytestmark = pytest.mark.anyio


# Errors a later version (or an application) may add, listed nowhere in mas.api.problems.
class UnlistedUsage(UsageError, ValueError):
    """The caller's mistake: the client's, over HTTP."""


class UnlistedDelivery(DeliveryError):
    """A message that was not delivered or answered."""


class UnlistedOutage(ServiceUnavailable):
    """A service that does not answer now."""


class UnlistedTimeout(StoreTimeout):
    """A subclass keeps its nearest listed base's status, not its layer's."""


CASES: list[tuple[BaseException, int, bool]] = [
    # Each layer's rule, for errors nobody listed.
    (UnlistedUsage("a new kind of bad input"), 400, False),
    (UnlistedDelivery("a new way for a message to fail"), 502, False),
    (UnlistedOutage("a new service is down"), 503, True),
    (UnlistedTimeout("a slower store"), 504, True),
    # Usage errors.
    (InvalidMessage("payload must be an object"), 422, False),
    (InvalidAddress("not an address"), 422, False),
    (MessageTooLarge(2048, 1024), 413, False),
    (DuplicateAgent("alice"), 409, False),
    (RuntimeNotRunning("stopping"), 503, True),
    (HandlerReturnError("returned an int"), 502, False),
    (ConfigError("a server-side setting"), 500, False),
    # Delivery errors.
    (UnknownAgent("agent:ghost"), 404, False),
    (AgentStopped("bob"), 409, False),
    (MailboxFull("a", 1), 429, True),
    (QueueFull("type:worker", 200, 100), 429, True),
    (AskTimeout("agent:slow", 2.5), 504, True),
    (HandlerError("worker", "KeyError", "'sku'", 3), 502, False),
    (AgentStartError("start() raised"), 502, False),
    # Unavailable services.
    (TransportError("RabbitMQ did not confirm the publish"), 503, True),
    (StoreUnavailable("the database refused"), 503, True),
    (StoreTimeout("no answer within 10s"), 504, True),
    (SchemaOutdated("run `mas db upgrade`"), 503, True),
    (RedisUnavailable("claim", ConnectionError("refused")), 503, True),
    # In no layer, or not ours: the server failed.
    (SupervisorEscalation("root", 5, 10.0), 500, False),
    (MasError("nothing maps this"), 500, False),
    (TimeoutError(), 500, False),
    (KeyError("a bug"), 500, False),
]


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise/{index}")
    async def fail(index: int) -> None:
        raise CASES[index][0]

    # raise_app_exceptions=False: the client sees what the server sent, as over a socket.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(
    ("index", "status", "retry"),
    [(n, status, retry) for n, (_, status, retry) in enumerate(CASES)],
    ids=[f"{type(error).__name__}-{status}" for error, status, _ in CASES],
)
async def test_an_error_is_a_problem_document_with_an_honest_status(
    client: httpx.AsyncClient, index: int, status: int, retry: bool
) -> None:
    async with client:
        response = await client.get(f"/raise/{index}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert (body["status"], body["instance"]) == (status, f"/raise/{index}")
    assert ("retry-after" in response.headers) is retry
    if status == 500:
        # What failed inside is for the operator's log, not for the client.
        assert body["detail"] == f"the gateway failed: {type(CASES[index][0]).__name__}"


TASK_CASES: list[tuple[BaseException, int, str]] = [
    (UnknownTask("t-1"), 404, "Unknown Task"),
    (TaskIdTaken("order-1"), 409, "Task Id Taken"),
    (IdempotencyKeyReused("order-1"), 422, "Idempotency Key Reused"),
    (TaskFinished("t-1", "succeeded"), 409, "Task Finished"),
    (UnknownCapability("translate"), 404, "Unknown Capability"),
]


@pytest.mark.parametrize(
    ("error", "status", "title"), TASK_CASES, ids=[type(e).__name__ for e, _, _ in TASK_CASES]
)
async def test_task_errors_keep_a_title_of_their_own(
    error: BaseException, status: int, title: str
) -> None:
    # A client tells "no such task" from "no such agent" by the title: the task errors are
    # not their nearest relative's.
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise")
    async def fail() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/raise")
    body = response.json()
    assert (response.status_code, body["title"], body["detail"]) == (status, title, str(error))
    assert isinstance(error, UsageError) != isinstance(error, DeliveryError)
