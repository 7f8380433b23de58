"""/tasks: submit work, read its status and result (optionally waiting), list, cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from mas.api.auth import Claims, require
from mas.api.problems import Problem
from mas.api.schemas import ID_PATTERN, TaskIn, TaskList, TaskOut, TaskStatus
from mas.api.state import Gateway, gateway
from mas.errors import UnknownAgent
from mas.messages import Message, TaskError, TaskResult, new_id
from mas.persistence.store import TaskRecord

_log = structlog.get_logger("mas.api.tasks")

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


@router.post("/", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut)
async def submit_task(
    spec: TaskIn,
    request: Request,
    response: Response,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("tasks:write"))],
    idempotency_key: Annotated[str | None, Header(max_length=64, pattern=ID_PATTERN)] = None,
    wait: Annotated[
        float, Query(ge=0, le=3600, description="seconds to wait for the end (200 if it ended)")
    ] = 0,
) -> TaskOut:
    """Create a task and hand it to an agent; returns at once (202) with the task id.

    With `?wait=N`, holds the request up to N seconds and returns the finished task (200),
    saving the client a second request. The same `Idempotency-Key` header (or body `id`)
    returns the same task instead of creating another.
    """
    task_id = spec.id or idempotency_key or new_id()
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
    task, created = await gw.store.create_task(
        task_id,
        spec.message_type,
        spec.payload,
        target=target,
        created_by=claims.subject,
        trace_id=trace_id,
    )
    if task.status == "pending":
        # Also for a repeated submission: an earlier attempt may have been refused (429);
        # a message id the agent already handled is skipped there.
        try:
            await gw.runtime.tell(target, message)
        except UnknownAgent:
            await _fail(gw, task, "UnknownAgent", f"no agent answers to {target!r}")
            raise
    _log.info(
        "task_submitted",
        task_id=task_id,
        target=target,
        trace_id=trace_id,
        created=created,
        created_by=claims.subject,
    )
    response.headers["Location"] = f"/tasks/{task_id}"
    if wait > 0 and not task.done:
        task = await _wait_for_end(gw, task, min(wait, gw.settings.api.max_wait))
    if not created or task.done:
        response.status_code = status.HTTP_200_OK
    return TaskOut.of(task)


async def _fail(gw: Gateway, task: TaskRecord, error_type: str, detail: str) -> None:
    journal = gw.runtime.journal
    if journal is not None:
        journal.task_finished(
            TaskResult.failed(task.id, TaskError(error_type, detail)),
            Message(task.type, metadata={"task_id": task.id}),
            0,
        )
        await journal.flush()


@router.get("/", response_model=TaskList)
async def list_tasks(
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("tasks:read"))],
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TaskList:
    """Tasks, newest first, filtered by status and type."""
    tasks = await gw.store.list_tasks(status=status_, task_type=type_, limit=limit, offset=offset)
    return TaskList(items=[TaskOut.of(t) for t in tasks], limit=limit, offset=offset)


@router.get("/{task_id}", response_model=TaskOut)
async def get_task(
    task_id: str,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("tasks:read"))],
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds to wait for the end")] = 0,
) -> TaskOut:
    """A task; with `?wait=N`, held up to N seconds until it has finished."""
    task = await gw.store.get_task(task_id)
    if task is None:
        raise Problem(404, "Unknown Task", f"no task with id {task_id!r}")
    if wait > 0 and not task.done:
        task = await _wait_for_end(gw, task, min(wait, gw.settings.api.max_wait))
    return TaskOut.of(task)


async def _wait_for_end(gw: Gateway, task: TaskRecord, wait: float) -> TaskRecord:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    event = gw.watch(task.id)
    poll = 0.01
    try:
        while not task.done:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # The runtime's listener wakes us when the task ends on this node; a task that
            # ends on another node (a worker) is found by re-reading the store, soon at first
            # (most tasks are quick), then backing off to twice a second.
            with contextlib.suppress(TimeoutError):  # the poll interval ended: re-read
                await asyncio.wait_for(event.wait(), min(remaining, poll))
            poll = min(poll * 2, 0.5)
            if event.is_set() and gw.runtime.journal is not None:
                await gw.runtime.journal.flush()
            latest = await gw.store.get_task(task.id)
            assert latest is not None
            task = latest
    finally:
        gw.unwatch(task.id, event)
    return task


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def task_events(
    task_id: str,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("tasks:read"))],
    timeout: Annotated[float, Query(gt=0, le=3600, description="close after N seconds")] = 300,
) -> StreamingResponse:
    """Server-Sent Events: one `status` event per state change, until the task ends."""
    task = await gw.store.get_task(task_id)
    if task is None:
        raise Problem(404, "Unknown Task", f"no task with id {task_id!r}")

    async def stream() -> AsyncIterator[str]:
        current: TaskRecord = task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        yield _event(current)
        last = current.status
        while not current.done and loop.time() < deadline:
            current = await _wait_for_end(gw, current, min(1.0, deadline - loop.time()))
            if current.status != last:
                last = current.status
                yield _event(current)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _event(task: TaskRecord) -> str:
    return f"event: status\ndata: {TaskOut.of(task).model_dump_json()}\n\n"


@router.post("/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(
    task_id: str,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("tasks:write"))],
) -> TaskOut:
    """Cancel a task that has not finished (409 if it already has)."""
    task = await gw.store.cancel_task(task_id)
    if task is None:
        raise Problem(404, "Unknown Task", f"no task with id {task_id!r}")
    if task.status != "cancelled":
        raise Problem(409, "Task Finished", f"task {task_id!r} already {task.status}")
    return TaskOut.of(task)
