"""/tasks: submit work, read its status and result (optionally waiting), list, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter
from starlette.background import BackgroundTask

from mas.api.auth import Claims, admit, require
from mas.api.direct import direct_route
from mas.api.problems import AUTH_PROBLEMS, Problem, problems
from mas.api.schemas import ID_PATTERN, TaskIn, TaskList, TaskOut, TaskStatus
from mas.api.state import Gateway, gateway
from mas.errors import (
    AgentStopped,
    MailboxFull,
    MasError,
    QueueFull,
    TransportError,
    UnknownAgent,
)
from mas.messages import Message, TaskError, TaskResult, new_id
from mas.persistence.journal import TaskEnd
from mas.persistence.store import TaskRecord

_log = structlog.get_logger("mas.api.tasks")

ADMIN = "tasks:admin"
"""The scope that sees (and may cancel) every caller's tasks; others see their own only."""

router = APIRouter(prefix="/tasks", tags=["tasks"])

GatewayDep = Annotated[Gateway, Depends(gateway)]


def _target(gw: Gateway, spec: TaskIn) -> str:
    if spec.agent is not None:
        return f"agent:{spec.agent}"
    if spec.type is not None:
        return f"type:{spec.type}"
    assert spec.capability is not None
    types = gw.capability_types(spec.capability)
    if not types:
        raise Problem(
            404,
            "Unknown Capability",
            f"no running agent offers capability {spec.capability!r}",
        )
    return f"type:{types[0]}"


IdempotencyKey = Annotated[str | None, Header(max_length=64, pattern=ID_PATTERN)]
SubmitWait = Annotated[
    float,
    Query(
        ge=0,
        description="seconds to wait for the end (200 if it ended): under 0.001 is no wait, "
        "at most MAS_API__MAX_WAIT",
    ),
]
_WRITE = frozenset({"tasks:write"})
_KEY = TypeAdapter(IdempotencyKey)
_WAIT = TypeAdapter(SubmitWait)


async def _submit_arguments(request: Request) -> dict[str, Any] | None:
    """`submit_task`'s arguments as FastAPI would pass them; None unless all are valid.

    The body is parsed as FastAPI parses it (`json.loads`, then the model), and a value
    that does not validate leaves the request to FastAPI, which says what is wrong.
    """
    headers = request.headers
    if headers.get("content-type") != "application/json":
        return None
    try:
        spec = TaskIn.model_validate(json.loads(await request.body()))
        key = headers.get("idempotency-key")
        idempotency_key = None if key is None else _KEY.validate_python(key)
        wait = request.query_params.get("wait")
        wait_seconds = 0 if wait is None else _WAIT.validate_python(wait)
    except (ValueError, RecursionError):  # not JSON, nested too deep, or a ValidationError
        return None
    return {
        "spec": spec,
        "request": request,
        "gw": await gateway(request),
        "claims": await admit(request, _WRITE),  # 401/403 as the dependency raises them
        "idempotency_key": idempotency_key,
        "wait": wait_seconds,
    }


async def submit_task(
    spec: TaskIn,
    request: Request,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require(*_WRITE))],
    idempotency_key: IdempotencyKey = None,
    wait: SubmitWait = 0,
) -> Response:
    """Create a task and hand it to an agent; returns at once (202) with the task id.

    With `?wait=N`, holds the request up to N seconds and returns the finished task (200),
    saving the client a second request. The same `Idempotency-Key` header (or body `id`)
    returns the same task instead of creating another.
    """
    wait = gw.applied_wait(wait)
    key = spec.id or idempotency_key
    task_id = key or new_id()
    trace_id: str = request.state.trace_id
    target = _target(gw, spec)
    message = Message(
        spec.message_type,
        spec.payload,
        id=task_id,
        target=target,
        metadata={"task_id": task_id},
        trace_id=trace_id,
    )
    message.to_json(max_bytes=gw.settings.message_max_bytes)  # 413 before anything is stored
    journal = gw.journal
    # A task for a local agent ends in this node's journal; any other may end elsewhere.
    local = gw.runtime.routes_locally(target)
    ended = journal.watch_task(task_id) if wait > 0 else None
    try:
        if key is None:
            task = await _create_new(gw, spec, message, claims.subject, local=local)
            created = True
        else:
            task, created = await _create_keyed(gw, spec, message, claims.subject, local=local)
        _log.info(
            "task_submitted",
            task_id=task_id,
            target=target,
            trace_id=trace_id,
            created=created,
            created_by=claims.subject,
        )
        if ended is not None and not task.done:
            task = await _wait_for_end(gw, task, ended, wait, local=local)
    finally:
        if ended is not None:
            journal.unwatch_task(task_id, ended)
    if key is None and not task.done:
        await gw.recorded(task_id)  # a 202 promises a readable task (an end implies one)
    accepted = created and not task.done
    return _task_response(
        task,
        status.HTTP_202_ACCEPTED if accepted else status.HTTP_200_OK,
        {"Location": f"/tasks/{task_id}"},
    )


router.add_api_route(
    "/",
    submit_task,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "the task ended within ?wait=, or a repeat"},
        **problems(*AUTH_PROBLEMS, 400, 404, 409, 413, 422, 429),
    },
    route_class_override=direct_route(_submit_arguments),
)


def _task_response(
    task: TaskRecord, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The task as `TaskOut` JSON, without FastAPI validating it again as the response model."""
    return Response(TaskOut.json_of(task), status_code, headers, media_type="application/json")


async def _create_new(
    gw: Gateway, spec: TaskIn, message: Message, subject: str, *, local: bool
) -> TaskRecord:
    """Create a task under a fresh id and hand it over, committing only when it must.

    The message goes into the outbox with the task's creation: nothing between the commit
    and the wire can lose it. A fresh id cannot exist yet, so nothing is read. When a local
    agent will handle the message (`local`), it goes at once: this node's journal records
    its creation before its start and end (creations come first in a batch), one commit can
    hold the lot, and the outbox row goes in the commit that records the handling (or is
    never written at all). Otherwise another node may act on the message, so the creation
    commits before the relay sends it.
    """
    gw.store.check_storable(spec.payload, "payload")
    gw.check_writable()
    assert message.target is not None
    await gw.check_new_work(message.target, local=local)
    task = TaskRecord.new(
        message.id,
        spec.message_type,
        spec.payload,
        target=message.target,
        created_by=subject,
        trace_id=message.trace_id,
    )
    journal = gw.journal
    journal.task_created(task)
    if not local:
        handed = journal.send_after_commit(message)
        await gw.recorded(task.id)
        await _handed_over(gw, task, handed)
        return task
    journal.send_after_commit(message, delivered=True)
    try:
        await gw.runtime.tell(message.target, message)
    except (MailboxFull, AgentStopped, UnknownAgent) as exc:
        # Nobody will resend a task whose id the client never saw: record the refusal.
        journal.discard(message.id)
        await _fail(gw, task, type(exc).__name__, str(exc))
        raise
    return task


async def _create_keyed(
    gw: Gateway, spec: TaskIn, message: Message, subject: str, *, local: bool
) -> tuple[TaskRecord, bool]:
    """Create a task under the client's id (or find it), in a transaction of its own.

    The transaction also writes the message's outbox row, so a repeated submission never
    needs to hand the message over again: the relay does, until it is on its way.
    """
    assert message.target is not None
    try:
        await gw.check_new_work(message.target, local=local)
    except (TransportError, AgentStopped, UnknownAgent, QueueFull):
        # Refused for new work; a repeat of work accepted before gets what it was.
        existing = await gw.store.get_task(message.id)
        if existing is None:
            raise
        return _repeated(existing, spec, message, subject), False
    journal = gw.journal
    task, created = await gw.write_now(
        gw.store.create_task(
            message.id,
            spec.message_type,
            spec.payload,
            target=message.target,
            created_by=subject,
            trace_id=message.trace_id,
            send=journal.outbox_row(message),
        ),
        message.id,
    )
    if created:
        await _handed_over(gw, task, journal.send_committed(message))
        return task, True
    return _repeated(task, spec, message, subject), False


def _repeated(task: TaskRecord, spec: TaskIn, message: Message, subject: str) -> TaskRecord:
    """The task a repeated submission under the same id gets: the caller's own, for the same
    request. Another caller's id is taken (409; nothing of that task is shown); the same id
    for a different request is the client's mistake (422), never the old task silently."""
    if task.created_by != subject:
        raise Problem(
            409,
            "Task Id Taken",
            f"another caller's task has the id {task.id!r}: choose another Idempotency-Key "
            "(or body id)",
        )
    if (task.type, task.target, task.payload) != (spec.message_type, message.target, spec.payload):
        raise Problem(
            422,
            "Idempotency Key Reused",
            f"the id {task.id!r} was used for a different request (message type, target or "
            "payload differ): a retry must repeat the request, new work needs a new key",
        )
    return task


async def _handed_over(gw: Gateway, task: TaskRecord, handed: asyncio.Future[None] | None) -> None:
    """Wait (bounded) for the relay's first attempt to send a committed task's message.

    The task is accepted either way: a message the broker did not take now stays in the
    outbox and goes when it can. Only a target nobody serves ends it (recorded failed).

    Raises:
        UnknownAgent: no agent answers to the task's target (404).
    """
    if handed is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(handed), gw.settings.api.write_timeout)
    except UnknownAgent:
        await gw.recorded(task.id)
        raise
    except (MasError, TimeoutError) as exc:
        _log.warning(
            "task_send_deferred",
            task_id=task.id,
            error_type=type(exc).__name__,
            error=str(exc),
        )


async def _fail(gw: Gateway, task: TaskRecord, error_type: str, detail: str) -> None:
    gw.journal.task_finished(
        TaskResult.failed(task.id, TaskError(error_type, detail)),
        Message(task.type, metadata={"task_id": task.id}),
        0,
    )
    await gw.recorded(task.id)


def owner_filter(claims: Claims) -> str | None:
    """Whose tasks `claims` may see: its own (the subject), or everyone's (`tasks:admin`)."""
    return None if ADMIN in claims.scopes else claims.subject


def _visible(claims: Claims, task: TaskRecord) -> bool:
    return ADMIN in claims.scopes or task.created_by == claims.subject


@router.get("/", response_model=TaskList, responses=problems(*AUTH_PROBLEMS, 422))
async def list_tasks(
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:read"))],
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """The caller's tasks (everyone's with `tasks:admin`), newest first, by status and type."""
    tasks = await gw.store.list_tasks(
        status=status_,
        task_type=type_,
        created_by=owner_filter(claims),
        limit=limit,
        offset=offset,
    )
    return Response(TaskList.json_of(tasks, limit, offset), media_type="application/json")


GetWait = Annotated[
    float,
    Query(
        ge=0,
        description="seconds to wait for the end: under 0.001 is no wait, at most "
        "MAS_API__MAX_WAIT",
    ),
]
_READ = frozenset({"tasks:read"})
_GET_WAIT = TypeAdapter(GetWait)


async def _get_arguments(request: Request) -> dict[str, Any] | None:
    """`get_task`'s arguments as FastAPI would pass them; None unless all are valid."""
    wait = request.query_params.get("wait")
    try:
        wait_seconds = 0 if wait is None else _GET_WAIT.validate_python(wait)
    except ValueError:  # a ValidationError
        return None
    return {
        "task_id": request.path_params["task_id"],
        "gw": await gateway(request),
        "claims": await admit(request, _READ),
        "wait": wait_seconds,
    }


async def get_task(
    task_id: str,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require(*_READ))],
    wait: GetWait = 0,
) -> Response:
    """One of the caller's tasks; with `?wait=N`, held up to N seconds until it has finished."""
    wait = gw.applied_wait(wait)
    if wait <= 0:
        return _task_response(await _read(gw, task_id, claims))
    ended = gw.journal.watch_task(task_id)  # before the read: no end falls in between
    try:
        task = await _read(gw, task_id, claims)
        if not task.done:
            task = await _wait_for_end(gw, task, ended, wait)
    finally:
        gw.journal.unwatch_task(task_id, ended)
    return _task_response(task)


router.add_api_route(
    "/{task_id}",
    get_task,
    methods=["GET"],
    response_model=TaskOut,
    responses=problems(*AUTH_PROBLEMS, 404, 422),
    route_class_override=direct_route(_get_arguments),
)


async def _read(gw: Gateway, task_id: str, claims: Claims) -> TaskRecord:
    """The task, if the caller may see it: another caller's task is as unknown as none."""
    task = await gw.store.get_task(task_id)
    if task is None or not _visible(claims, task):
        raise Problem(404, "Unknown Task", f"no task with id {task_id!r}")
    return task


async def _wait_for_end(
    gw: Gateway,
    task: TaskRecord,
    ended: asyncio.Future[TaskEnd],
    wait: float,
    *,
    local: bool = False,
) -> TaskRecord:
    """`task` once it has ended (or as it is after `wait` seconds).

    This node's journal resolves `ended` when it commits the end; a task that ends on
    another node (a worker) is found by re-reading the store, soon at first (most tasks are
    quick), then backing off to twice a second. A task this request just handed to a
    local agent is re-read only as a safety net (its agent may stop and hand it over).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    poll = 0.5 if local else 0.01
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return task
        # asyncio.wait leaves `ended` alone when the poll interval ends (wait_for cancels).
        await asyncio.wait((ended,), timeout=min(remaining, poll))
        if ended.done():
            return ended.result().applied_to(task)
        poll = min(poll * 2, 0.5)
        latest = await gw.store.get_task(task.id)
        if latest is not None:
            task = latest
            if task.done:
                return task


_STATUS_EVENT = {
    "description": "one event: the task as it is now, after a change of status",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "status"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/TaskOut"},
        },
    },
}


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _STATUS_EVENT}}},
        **problems(*AUTH_PROBLEMS, 404, 422),
    },
)
async def task_events(
    task_id: str,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:read"))],
    timeout: Annotated[float, Query(gt=0, le=3600, description="close after N seconds")] = 300,
) -> StreamingResponse:
    """Server-Sent Events: one `status` event per state change, until the task ends.

    The stream reads the task again only when woken: by this node's commit of a change, or
    by the gateway's one shared poll for changes other nodes record (see `mas.api.streams`).
    A caller holding `MAS_API__MAX_STREAMS_PER_CALLER` open streams gets 429.
    """
    slot = gw.streams.open(task_id, claims.subject)  # before the read: no change falls between
    if slot is None:
        raise Problem(
            429,
            "Too Many Streams",
            f"this caller already holds {gw.streams.max_per_caller} open event streams: close "
            "one (or wait for one to end) before opening another",
            headers={"Retry-After": "1"},
        )
    try:
        task = await _read(gw, task_id, claims)
    except BaseException:
        slot.close()
        raise
    slot.seen(task.status)

    async def stream() -> AsyncIterator[bytes]:
        try:
            current: TaskRecord = task
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            yield _event(current)
            last = current.status
            while not current.done:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await slot.changed(remaining):
                    return
                latest = await gw.store.get_task(task_id)
                if latest is None:  # pruned meanwhile
                    return
                current = latest
                if current.status != last:
                    last = current.status
                    yield _event(current)
        finally:
            slot.close()  # the task ended, the stream timed out, or the client went away

    async def release() -> None:
        slot.close()  # a stream whose client left before its first event never ran `stream`

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(release),
    )


def _event(task: TaskRecord) -> bytes:
    return b"event: status\ndata: " + TaskOut.json_of(task) + b"\n\n"


@router.post(
    "/{task_id}/cancel",
    response_model=TaskOut,
    responses=problems(*AUTH_PROBLEMS, 404, 409, 413, 422),
)
async def cancel_task(
    task_id: str,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:write"))],
) -> Response:
    """Cancel one of the caller's tasks that has not finished (409 if it already has)."""
    await _read(gw, task_id, claims)
    task = await gw.store.cancel_task(task_id)
    gw.journal.discard(task_id)  # its message, if still waiting to be sent, stays unsent
    if task is None:
        raise Problem(404, "Unknown Task", f"no task with id {task_id!r}")
    if task.status != "cancelled":
        raise Problem(409, "Task Finished", f"task {task_id!r} already {task.status}")
    gw.journal.task_cancelled(task)
    return _task_response(task)
