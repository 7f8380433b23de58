"""GET /tasks/{id}/events: Server-Sent Events of a task's state changes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mas.api.auth import SCOPES, mint_token
from mas.api.problems import PROBLEM_JSON
from mas.api.state import Gateway
from mas.config import ApiSettings
from mas.testing import eventually
from tests.unit.api.conftest import SECRET, TroubleAgent, auth

pytestmark = pytest.mark.anyio


def events(body: str) -> list[dict[str, Any]]:
    """Parse `event: status` / `data: {...}` blocks."""
    parsed = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        assert lines["event"] == "status"
        parsed.append(json.loads(lines["data"]))
    return parsed


async def test_the_stream_ends_with_the_final_status(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    submitted = await client.post(
        "/tasks/", json={"type": "echo", "payload": {"n": 1}}, headers=token()
    )
    task_id = submitted.json()["id"]
    response = await client.get(f"/tasks/{task_id}/events", params={"timeout": 10}, headers=token())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    statuses = [event["status"] for event in events(response.text)]
    assert statuses[-1] == "succeeded"
    assert len(statuses) == len(set(statuses))  # one event per change, no repeats
    assert events(response.text)[-1]["result"] == {"n": 1}


async def test_events_of_an_unknown_task_are_404(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    response = await client.get("/tasks/nope/events", headers=token())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_events_need_the_read_scope(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    response = await client.get("/tasks/x/events", headers=token("tasks:write"))
    assert response.status_code == 403


class Stream:
    """One GET of an event stream driven straight through the ASGI app, as a server does.

    httpx's ASGITransport buffers a whole response; this reads events as they come and
    lets the client go away (an `http.disconnect`, which is how uvicorn reports it).
    """

    def __init__(self, app: FastAPI, path: str, headers: dict[str, str]) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.ended = False
        self._buffer = ""
        self._requested = False
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self.sent.put))

    async def _receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def started(self) -> Stream:
        start = await asyncio.wait_for(self.sent.get(), 5)
        self.status = start["status"]
        self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return self

    async def _more(self) -> None:
        message = await asyncio.wait_for(self.sent.get(), 5)
        self._buffer += message.get("body", b"").decode()
        self.ended = not message.get("more_body", False)

    async def body(self) -> str:
        while not self.ended:
            await self._more()
        return self._buffer

    async def next_event(self) -> dict[str, Any]:
        while "\n\n" not in self._buffer:
            assert not self.ended, "the stream ended"
            await self._more()
        block, self._buffer = self._buffer.split("\n\n", 1)
        return events(block)[0]

    async def disconnect(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 5)


async def running_slow_task(
    client: httpx.AsyncClient, gw: Gateway, trouble: type[TroubleAgent]
) -> str:
    """A task whose handler holds it: recorded `running`, then nothing changes."""
    submitted = await client.post(
        "/tasks/", json={"agent": "trouble", "message_type": "slow"}, headers=auth()
    )
    task_id: str = submitted.json()["id"]
    await asyncio.wait_for(trouble.started.wait(), 5)

    async def recorded_running() -> bool:
        task = await gw.store.get_task(task_id)
        return task is not None and task.status == "running"

    await eventually(recorded_running)
    return task_id


def streams_app(make_app: Callable[..., FastAPI], **api: Any) -> FastAPI:
    return make_app(api=ApiSettings(**api))


async def test_streams_on_an_idle_task_share_one_store_read_per_interval(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    # Each stream used to re-read its task twice a second: 200 streams, most of a core.
    app = streams_app(make_app, stream_poll_interval=0.5)
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        streams = [
            await Stream(app, f"/tasks/{task_id}/events", auth()).started() for _ in range(10)
        ]
        for stream in streams:
            assert stream.status == 200
            assert (await stream.next_event())["status"] == "running"
        reads: Counter[str] = Counter()
        store = gw.store
        for name in ("get_task", "task_statuses", "list_tasks"):
            real = getattr(store, name, None)
            if real is not None:
                setattr(store, name, counted(real, name, reads))
        await asyncio.sleep(1.6)  # the window reads are counted over, not a synchronisation
        # One shared read per 0.5 s interval for all ten streams (3 in 1.6 s), not ten each.
        assert sum(reads.values()) <= 4, reads
        for stream in streams:
            await stream.disconnect()
        assert gw.streams.open_streams == 0


def counted(
    real: Callable[..., Awaitable[Any]], name: str, reads: Counter[str]
) -> Callable[..., Awaitable[Any]]:
    async def read(*args: Any, **kwargs: Any) -> Any:
        reads[name] += 1
        return await real(*args, **kwargs)

    return read


async def test_a_change_this_node_commits_is_pushed_to_the_stream(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    app = streams_app(make_app, stream_poll_interval=60)  # no poll within the test
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        stream = await Stream(app, f"/tasks/{task_id}/events", auth()).started()
        assert (await stream.next_event())["status"] == "running"
        trouble.release.set()
        final = await stream.next_event()
        assert final["status"] == "succeeded"
        assert final["result"]["handled"] == "slow"
        await stream.body()  # the stream ends with the task
        await stream.task
        assert gw.streams.open_streams == 0


async def test_a_change_another_node_records_reaches_the_stream_by_the_shared_poll(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    app = streams_app(make_app, stream_poll_interval=0.05)
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        stream = await Stream(app, f"/tasks/{task_id}/events", auth()).started()
        assert (await stream.next_event())["status"] == "running"
        # Written straight to the store, as a worker's journal would: this node's
        # journal never sees it, so only the poll can.
        await gw.store.cancel_task(task_id)
        assert (await stream.next_event())["status"] == "cancelled"
        await stream.body()
        assert gw.streams.polls >= 1


async def test_a_caller_over_its_stream_cap_gets_429_until_a_stream_closes(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    app = streams_app(make_app, max_streams_per_caller=2)
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        path = f"/tasks/{task_id}/events"
        first, second = [await Stream(app, path, auth()).started() for _ in range(2)]
        assert (first.status, second.status) == (200, 200)
        refused = await Stream(app, path, auth()).started()
        assert refused.status == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
        body = json.loads(await refused.body())
        assert body["status"] == 429
        assert "2 open event streams" in body["detail"]
        # The cap is per caller: another token subject still gets its stream.
        other = {"Authorization": f"Bearer {mint_token(SECRET, 'other', SCOPES, ttl=600)}"}
        another = await Stream(app, path, other).started()
        assert another.status == 200
        await another.disconnect()
        # A client that goes away gives its slot back.
        await first.disconnect()
        again = await Stream(app, path, auth()).started()
        assert again.status == 200
        await again.disconnect()
        await second.disconnect()
        assert gw.streams.open_streams == 0


async def test_dashboard_streams_count_towards_the_callers_cap(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    # Each dashboard stream re-reads the cluster's picture every second: uncapped, one
    # caller could open them by the thousand.
    app = streams_app(make_app, max_streams_per_caller=2)
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        dashboards = [await Stream(app, "/dashboard/events", auth()).started() for _ in range(2)]
        assert [d.status for d in dashboards] == [200, 200]
        for refused in (
            await Stream(app, "/dashboard/events", auth()).started(),
            await Stream(app, f"/tasks/{task_id}/events", auth()).started(),
        ):
            assert refused.status == 429
            assert refused.headers["retry-after"] == "1"
            assert "2 open event streams" in json.loads(await refused.body())["detail"]
        await dashboards[0].disconnect()  # its slot comes back
        task_stream = await Stream(app, f"/tasks/{task_id}/events", auth()).started()
        assert task_stream.status == 200
        await task_stream.disconnect()
        await dashboards[1].disconnect()
        assert gw.streams.open_streams == 0


async def test_a_stream_that_times_out_gives_its_slot_back(
    make_app: Callable[..., FastAPI], serve: Any, trouble: type[TroubleAgent]
) -> None:
    app = streams_app(make_app, max_streams_per_caller=1)
    async with serve(app) as client:
        gw: Gateway = app.state.gateway
        task_id = await running_slow_task(client, gw, trouble)
        response = await client.get(
            f"/tasks/{task_id}/events", params={"timeout": 0.2}, headers=auth()
        )
        assert [e["status"] for e in events(response.text)] == ["running"]
        assert gw.streams.open_streams == 0
        again = await Stream(app, f"/tasks/{task_id}/events", auth()).started()
        assert again.status == 200
        await again.disconnect()
