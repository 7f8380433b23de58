"""/tasks: submit work, read its status and result (optionally waiting), its workflow and
its trace's messages, list, cancel.

The routes speak HTTP only (parse, authorize, call `Gateway.tasks`, write `TaskOut` JSON,
choose the status and headers); what each use case does is `mas.api.tasks.TaskService`'s,
and its typed errors become problem responses in `mas.api.problems`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from mas.api.auth import Claims, admit, require
from mas.api.direct import direct_route
from mas.api.problems import AUTH_PROBLEMS, problems
from mas.api.schemas import (
    ID_PATTERN,
    NAME_PATTERN,
    MessageTaskIn,
    Payload,
    SignalOut,
    StepOut,
    TaskIn,
    TaskList,
    TaskMessagesOut,
    TaskOut,
    TaskStatus,
    TaskSubmission,
    TaskTreeOut,
    TraceMessageOut,
)
from mas.api.state import Gateway, gateway
from mas.api.streams import held_event_stream
from mas.persistence.store import TRACE_LIMIT, TaskRecord

router = APIRouter(prefix="/tasks", tags=["tasks"])

GatewayDep = Annotated[Gateway, Depends(gateway)]


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
_SUBMISSION: TypeAdapter[TaskIn | MessageTaskIn] = TypeAdapter(TaskSubmission)


async def _submit_arguments(request: Request) -> dict[str, Any] | None:
    """`submit_task`'s arguments as FastAPI would pass them; None unless all are valid.

    The body is parsed as FastAPI parses it (`json.loads`, then the model), and a value
    that does not validate leaves the request to FastAPI, which says what is wrong.
    """
    headers = request.headers
    if headers.get("content-type") != "application/json":
        return None
    try:
        spec = _SUBMISSION.validate_python(json.loads(await request.body()))
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
    spec: TaskSubmission,
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
    task, created = await gw.tasks.submit(
        spec,
        claims,
        idempotency_key=idempotency_key,
        trace_id=request.state.trace_id,
        wait=gw.applied_wait(wait),
    )
    accepted = created and not task.done
    return _task_response(
        task,
        status.HTTP_202_ACCEPTED if accepted else status.HTTP_200_OK,
        {"Location": f"/tasks/{task.id}"},
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


@router.get("/", response_model=TaskList, responses=problems(*AUTH_PROBLEMS, 404, 422))
async def list_tasks(
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:read"))],
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    parent: Annotated[
        str | None,
        Query(max_length=64, description="only the tasks this task's workflow started"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """The caller's tasks (everyone's with `tasks:admin`), newest first, by status, type
    and parent task (404 when the parent is not one of the caller's tasks)."""
    tasks = await gw.tasks.list(
        claims, status=status_, task_type=type_, parent_id=parent, limit=limit, offset=offset
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
        return _task_response(await gw.tasks.get(task_id, claims))
    return _task_response(await gw.tasks.wait_for_end(task_id, claims, wait))


router.add_api_route(
    "/{task_id}",
    get_task,
    methods=["GET"],
    response_model=TaskOut,
    responses=problems(*AUTH_PROBLEMS, 404, 422),
    route_class_override=direct_route(_get_arguments),
)


@router.get(
    "/{task_id}/tree", response_model=TaskTreeOut, responses=problems(*AUTH_PROBLEMS, 404, 422)
)
async def get_task_tree(
    task_id: str,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require(*_READ))],
) -> TaskTreeOut:
    """One of the caller's tasks with its workflow: the durable steps its handler finished
    (each with its kind and when), and the tasks it started (each with status and timings;
    the 500 newest, all through `GET /tasks/?parent=`)."""
    task, steps, children = await gw.tasks.tree(task_id, claims)
    return TaskTreeOut(
        task=TaskOut.of(task),
        steps=[StepOut(**step) for step in steps],
        children=[TaskOut.of(child) for child in children],
    )


@router.get(
    "/{task_id}/messages",
    response_model=TaskMessagesOut,
    responses=problems(*AUTH_PROBLEMS, 404, 422),
)
async def get_task_messages(
    task_id: str,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require(*_READ))],
) -> TaskMessagesOut:
    """The audited messages of the trace of one of the caller's tasks, oldest first (the
    oldest 500; `cut` says there are more): the task's message, what its handler sent and
    was answered, its child tasks' messages, each with the agent that handled it.

    Empty, with `audited` false, on a gateway that does not audit messages
    (`MAS_AUDIT=off`). Without `tasks:admin`, the messages of other callers' tasks that
    share the trace are left out (`hidden` counts them)."""
    found = await gw.tasks.messages(task_id, claims)
    return TaskMessagesOut(
        task_id=found.task.id,
        trace_id=found.task.trace_id,
        audited=found.audit != "off",
        audit=found.audit,
        items=[TraceMessageOut.of(message) for message in found.messages],
        limit=TRACE_LIMIT,
        cut=found.cut,
        hidden=found.hidden,
    )


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
        **problems(*AUTH_PROBLEMS, 404, 422, 429),
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
    try:
        task = await gw.tasks.get(task_id, claims)
    except BaseException:
        slot.close()
        raise
    slot.seen(task.status)

    async def statuses() -> AsyncIterator[bytes]:
        async with aclosing(gw.tasks.changes(task, slot, timeout)) as changes:
            async for current in changes:
                yield b"event: status\ndata: " + TaskOut.json_of(current) + b"\n\n"

    return held_event_stream(slot, statuses(), {})


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
    return _task_response(await gw.tasks.cancel(task_id, claims))


@router.post(
    "/{task_id}/signals/{name}",
    response_model=SignalOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(*AUTH_PROBLEMS, 404, 409, 413, 422),
)
async def signal_task(
    task_id: str,
    name: Annotated[str, Path(max_length=200, pattern=NAME_PATTERN)],
    payload: Annotated[Payload, Body()],
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:write"))],
) -> SignalOut:
    """Send signal `name` (the JSON body is its payload) to one of the caller's tasks that
    has not ended, for the workflow that waits for it (`ctx.signal(name)`), now or later.
    The first signal of a name counts (`stored`); 409 once the task has ended."""
    task, stored = await gw.tasks.signal(task_id, name, payload, claims)
    return SignalOut(task_id=task.id, name=name, stored=stored, task_status=task.status)
