"""Errors as RFC 9457 problem details: every error response is `application/problem+json`.

mas's typed errors map by layer (see `mas.errors`), so a new error gets an honest status
without being listed: a `UsageError` is the client's mistake (4xx, never a 500 for bad
input), a `DeliveryError` is the agent side failing (502), a `ServiceUnavailable` is a
database, broker or Redis outage (503 with Retry-After). Errors whose own status says more
override their layer's: 404 for an unknown agent, 409 for a conflict, 413 for a body too
large, 429 with Retry-After when a mailbox or queue rejects, 504 when a bounded wait ran out,
503 while mas is stopping. A usage error in the server's own settings or agent code is the
server's fault (500 or 502). Anything else is a 500, still as problem+json, logged once.

Driver errors never reach this layer: the Store, the transports and the Redis helpers map
them where they are raised, so an unmapped one is a bug (a 500, logged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from mas.api.schemas import SUBMISSION_TAGS
from mas.errors import (
    AgentStartError,
    AgentStopped,
    AskTimeout,
    ConfigError,
    DeadLetterSettled,
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
    Rejected,
    RuntimeNotRunning,
    SchemaOutdated,
    ServiceUnavailable,
    StoreTimeout,
    StoreUnavailable,
    TaskFinished,
    TaskIdTaken,
    TooManyStreams,
    TransportError,
    UnknownAgent,
    UnknownCapability,
    UnknownDeadLetter,
    UnknownTask,
    UsageError,
)

_log = structlog.get_logger("mas.api")

__all__ = [
    "AUTH_PROBLEMS",
    "PROBLEM_JSON",
    "Problem",
    "ProblemDetails",
    "install_problem_handlers",
    "problem_response",
    "problems",
]

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(BaseModel):
    """The body of every error response (RFC 9457), as the OpenAPI document describes it."""

    type: str = Field("about:blank", description="always about:blank: `title` says what")
    title: str = Field(..., description="what went wrong, the same for every such error")
    status: int = Field(..., description="the response's status code")
    detail: str = Field(..., description="what went wrong this time, and what to do")
    instance: str = Field(..., description="the request's path")
    errors: list[dict[str, Any]] | None = Field(
        None, description="on a 422: each invalid field and what is wrong with it"
    )


_MEANING = {
    400: "the request cannot work as sent (e.g. a body that is not UTF-8 text)",
    401: "no token, or one that is invalid or expired (WWW-Authenticate says which)",
    403: "the token lacks a scope this route needs",
    404: "nothing with that id (or not the caller's)",
    409: "conflicts with the current state",
    413: "the body is over MAS_MESSAGE_MAX_BYTES",
    422: "a field is invalid (`errors` lists them)",
    429: "the target's mailbox or queue is full: retry after Retry-After seconds",
    502: "the agent failed",
    503: "the database or broker does not answer, or mas is stopping: retry after Retry-After",
    504: "a bounded wait on the database or an agent ran out",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may answer with these error statuses (problem+json).

    The schema is `#/components/schemas/Problem`, which `create_app` adds to the document
    (FastAPI would file a model's schema under application/json only).
    """
    return {
        status: {
            "description": _MEANING[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


AUTH_PROBLEMS = (401, 403, 503, 504)
"""What any route behind a token may answer: the token is wrong or lacks a scope, the
gateway cannot check it, or its store does not answer (in time)."""


class Problem(Exception):
    """An HTTP error with a problem-details body; raise it from a route or a dependency."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    # For the access log: what the client was told, next to the status it got.
    request.state.problem = title
    request.state.detail = detail
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_AGENT_FAILED = (502, "Agent Failed")

# The status and title of an error: the first class of its MRO listed here decides, so a
# specific row overrides its layer's and an unlisted subclass gets its layer's. None: not
# the client's trouble nor a service's, but the server's own (a 500, logged).
_MAS_STATUS: dict[type[MasError], tuple[int, str] | None] = {
    # One rule per layer.
    UsageError: (400, "Bad Request"),
    DeliveryError: (502, "Delivery Failed"),
    ServiceUnavailable: (503, "Service Unavailable"),
    # Usage errors the request caused, with a status that says which.
    MessageTooLarge: (413, "Payload Too Large"),
    InvalidAddress: (422, "Invalid Address"),
    InvalidMessage: (422, "Invalid Message"),
    DuplicateAgent: (409, "Duplicate Agent"),
    UnknownTask: (404, "Unknown Task"),
    TaskIdTaken: (409, "Task Id Taken"),
    IdempotencyKeyReused: (422, "Idempotency Key Reused"),
    TaskFinished: (409, "Task Finished"),
    UnknownDeadLetter: (404, "Unknown Dead Letter"),
    DeadLetterSettled: (409, "Dead Letter Settled"),
    TooManyStreams: (429, "Too Many Streams"),
    Rejected: (422, "Rejected"),
    # Usage errors of the server, not of the client.
    ConfigError: None,
    HandlerReturnError: _AGENT_FAILED,
    RuntimeNotRunning: (503, "Shutting Down"),
    # Delivery errors a client acts on differently: look elsewhere, retry, stop waiting.
    UnknownAgent: (404, "Unknown Agent"),
    UnknownCapability: (404, "Unknown Capability"),
    AgentStopped: (409, "Agent Stopped"),
    MailboxFull: (429, "Mailbox Full"),
    QueueFull: (429, "Queue Full"),
    AskTimeout: (504, "Reply Timeout"),
    HandlerError: _AGENT_FAILED,
    AgentStartError: _AGENT_FAILED,
    # Which service is out (the status is the layer's), and a wait that ran out.
    StoreUnavailable: (503, "Store Unavailable"),
    StoreTimeout: (504, "Store Timeout"),
    SchemaOutdated: (503, "Store Outdated"),
    TransportError: (503, "Broker Unavailable"),
    RedisUnavailable: (503, "Redis Unavailable"),
}
# Worth retrying after a moment: the client is told when (Retry-After, seconds).
_RETRYABLE = frozenset({429, 503, 504})


def _status_of(error: MasError) -> tuple[int, str] | None:
    """The status and title the client gets for `error`; None for a server error (500)."""
    for cls in type(error).__mro__:
        if cls in _MAS_STATUS:
            return _MAS_STATUS[cls]
    return None  # a MasError in no layer (SupervisorEscalation): the server failed


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error (ours, FastAPI's, Starlette's) as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.title, exc.detail, exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(error.get("loc", ())), "message": error.get("msg")}
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "?", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        return problem_response(request, 422, "Invalid Request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return problem_response(
            request, exc.status_code, _title(exc.status_code), str(exc.detail), headers
        )

    @app.exception_handler(MasError)
    async def _mas(request: Request, exc: MasError) -> JSONResponse:
        mapped = _status_of(exc)
        if mapped is None:
            return _internal(request, exc)
        # Not logged per request: a service's outage is logged where it is seen, once when
        # it starts and once when it ends; the rest is the client's to act on.
        status, title = mapped
        headers = {"Retry-After": "1"} if status in _RETRYABLE else None
        return problem_response(request, status, title, str(exc), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, or a failure no boundary mapped: still a problem document, never plain text.
        return _internal(request, exc)


def _field(loc: Sequence[Any]) -> str:
    """The path of an invalid field as the client wrote it: `body.priority`, not the tag
    pydantic puts in for the body shape it chose (`body.task.priority`)."""
    parts = [str(part) for part in loc]
    if len(parts) >= 2 and parts[0] == "body" and parts[1] in SUBMISSION_TAGS:
        del parts[1]
    return ".".join(parts)


def _internal(request: Request, exc: BaseException) -> JSONResponse:
    _log.error(
        "request_crashed",
        path=request.url.path,
        error_type=type(exc).__name__,
        error=str(exc),
        exc_info=exc,
    )
    return problem_response(
        request, 500, "Internal Server Error", f"the gateway failed: {type(exc).__name__}"
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed(request: Request) -> str:
    """Every method some route answers at the request's path (RFC 9110 `Allow` on a 405).

    Starlette names only the methods of the first route whose path matches (`POST` for
    `DELETE /tasks/`, though `GET /tasks/` lists tasks), so each method is tried in turn.
    """
    scope = request.scope
    allowed = []
    for method in _METHODS:
        probe: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": [],
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
