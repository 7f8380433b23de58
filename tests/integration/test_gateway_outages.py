"""The gateway loses its broker or its database for a while: honest answers, nothing lost.

What a user of `mas api` relies on while the gateway cannot reach RabbitMQ or PostgreSQL
(its workers still can), and after:

- No answer blames the client: never a 400, never a plain-text 500. A service that is away
  is a problem+json 503 (504 for a wait that ran out) with Retry-After: try again shortly.
- A 202 is a promise. Every task the gateway accepted, and every task whose 503 said it
  stays queued, ends `succeeded` once the service is back, handled exactly once (the
  worker's effects file says so); no task stays `pending`.
- Reads answer within about `MAS_DATABASE_TIMEOUT`, and `/readyz` within a second, however
  the database behaves.
- The gateway's log says once that the database went away, and once that it came back.

The fault is a TCP proxy (tests/fault_proxy.py) between the gateway and that service
only: a blackhole (a partition: connections stay open, nothing answers) or refused
connections (every connection reset, new ones too). The proxy runs in the test's event loop,
so waits on the processes run in threads (`_in_thread`), never on that loop.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.system_support import SLOW_ECHO, System, effects, rows, system
from tests.process_support import MasProcess

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = pytest.mark.anyio

Fault = Literal["blackhole", "refuse"]

PUBLISH_TIMEOUT = 2.0  # MAS_AMQP__PUBLISH_TIMEOUT: seconds a publish waits for a confirm
DATABASE_TIMEOUT = 2.0  # MAS_DATABASE_TIMEOUT: seconds any one database call may take
WRITE_TIMEOUT = 3.0  # MAS_API__WRITE_TIMEOUT: seconds a submission waits for its commit
OUTAGE = 6.0  # seconds a fault lasts: a few of those timeouts
CLIENTS = 3  # clients submitting at once during an outage
PACE = 0.1  # seconds each of them waits between two submissions (workload)
NO_ANSWER = 10.0  # seconds a request waits before the test records "no answer"
PROBLEM_JSON = "application/problem+json"
QUEUED = re.compile(r"task '([^']+)' within .* it stays queued")


@dataclass
class Answer:
    """One request: when it was sent, how long its answer took, and the answer (status 0:
    none within NO_ANSWER seconds)."""

    sent: float
    took: float
    status: int
    content_type: str
    retry_after: str | None
    body: dict[str, Any]

    @property
    def task_id(self) -> str | None:
        """The task the gateway accepted, or whose 503 says it stays queued."""
        if self.status in (200, 202):
            return str(self.body["id"])
        found = QUEUED.search(str(self.body.get("detail", "")))
        return found.group(1) if found else None

    def __str__(self) -> str:
        return f"{self.status} after {self.took:.2f}s: {self.body}"


async def _request(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Answer:
    sent = time.monotonic()
    try:
        response = await client.request(method, path, timeout=NO_ANSWER, **kwargs)
    except httpx.TimeoutException:
        took = time.monotonic() - sent
        return Answer(sent, took, 0, "", None, {"error": f"no answer within {NO_ANSWER:g}s"})
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text}
    return Answer(
        sent,
        time.monotonic() - sent,
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after"),
        body if isinstance(body, dict) else {"items": body},
    )


async def _submit(client: httpx.AsyncClient) -> Answer:
    return await _request(client, "POST", "/tasks/", json={"type": "slow_echo", "payload": {}})


async def _submit_for(client: httpx.AsyncClient, seconds: float) -> list[Answer]:
    """Submissions from CLIENTS clients at once for `seconds`, every answer kept."""
    answers: list[Answer] = []
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        while time.monotonic() < deadline:
            answers.append(await _submit(client))
            await anyio.sleep(PACE)  # the client's pace: workload, not synchronisation

    async with anyio.create_task_group() as clients:
        for _ in range(CLIENTS):
            clients.start_soon(one_client)
    return answers


async def _until_accepted(client: httpx.AsyncClient) -> list[Answer]:
    """Submissions until the gateway accepts one again (the service is back), all kept."""
    answers: list[Answer] = []

    async def accepted() -> bool:
        answers.append(await _submit(client))
        return answers[-1].status == 202

    await eventually(accepted, timeout=60, interval=0.2)
    return answers


@dataclass
class Outcome:
    """What the database and the worker say once the outage is over and the processes
    stopped."""

    tasks: dict[str, str]  # every task the database holds, and its status
    handled: Counter[str]  # how many times the worker handled each message (its effects)
    exit_codes: list[int]  # of the processes, stopped with SIGTERM (each drains first)

    def check(self, answers: list[Answer]) -> None:
        """Every task promised ended `succeeded`; every task stored was handled once."""
        promised = {a.task_id for a in answers} - {None}
        tasks = self.tasks
        assert promised <= set(tasks), f"promised, never recorded: {promised - set(tasks)}"
        not_done = {task_id: status for task_id, status in tasks.items() if status != "succeeded"}
        assert not_done == {}, f"{len(not_done)} of {len(tasks)} tasks did not succeed"
        assert set(self.handled) == set(tasks), set(self.handled) ^ set(tasks)
        twice = {task_id: n for task_id, n in self.handled.items() if n != 1}
        assert twice == {}, "handled more than once"


async def _outcome(system: System, effects_file: Path) -> Outcome:
    """The outcome once no task is pending or running (bounded: one left pending is
    reported by `Outcome.check`, not waited for without end) and every process stopped
    (so a late duplicate handling is in the effects file too)."""

    async def none_open() -> bool:
        query = "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')"
        return int((await rows(system.pg, query))[0][0]) == 0

    with contextlib.suppress(TimeoutError):
        await eventually(none_open, timeout=45, interval=0.2)
    processes = system.processes
    exit_codes = [-1] * len(processes)

    async def stop(n: int) -> None:
        exit_codes[n] = await _in_thread(processes[n].terminate)

    async with anyio.create_task_group() as stopping:
        for n in range(len(processes)):
            stopping.start_soon(stop, n)
    found = await rows(system.pg, "SELECT id, status FROM tasks")
    tasks = {row["id"]: row["status"] for row in found}
    return Outcome(tasks, Counter(effects(effects_file)), exit_codes)


async def _in_thread(call: Callable[[], Any]) -> Any:
    """A blocking wait on a process, off the event loop that runs the fault proxy."""
    return await anyio.to_thread.run_sync(call)


async def _start(system: System, effects_file: Path, **api_env: str) -> MasProcess:
    """A SlowEcho worker (its effects in `effects_file`) and the gateway, started at once;
    returns the gateway."""
    started: dict[str, MasProcess] = {}

    async def gateway() -> None:
        started["api"] = await _in_thread(partial(system.api, **api_env))

    async with anyio.create_task_group() as starting:
        starting.start_soon(
            _in_thread, partial(system.worker, SLOW_ECHO, effects=str(effects_file))
        )
        starting.start_soon(gateway)
    return started["api"]


def _upstream(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _break(proxy: FaultProxy, fault: Fault) -> None:
    if fault == "blackhole":
        proxy.blackhole()
    else:
        proxy.refuse()


def _refusal(answer: Answer, statuses: tuple[int, ...], title: str | None = None) -> None:
    """`answer` is a problem document with one of `statuses` that says when to retry."""
    assert answer.status in statuses, str(answer)
    assert answer.content_type == PROBLEM_JSON, str(answer)
    assert answer.retry_after is not None, str(answer)
    if title is not None:
        assert answer.body["title"] == title, str(answer)


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
async def test_a_broker_outage_at_the_gateway_is_a_503_and_loses_no_accepted_task(
    system: System, fault: Fault
) -> None:
    """Issue 12, seen 1: the gateway cut from RabbitMQ answered 400 and left tasks pending."""
    effects_file = system.tmp / "worker.effects"
    async with fault_proxy("rabbitmq", *_upstream(system.amqp_url, 5672)) as broker:
        await _start(
            system,
            effects_file,
            MAS_AMQP_URL=broker.url(system.amqp_url),
            MAS_AMQP__PUBLISH_TIMEOUT=str(PUBLISH_TIMEOUT),
        )
        async with system.client() as client:
            before = await _submit(client)
            assert before.status == 202, str(before)
            _break(broker, fault)
            during = await _submit_for(client, OUTAGE)
            broker.restore()
            restored = time.monotonic()
            after = await _until_accepted(client)  # the robust connection reconnects
        outcome = await _outcome(system, effects_file)
    answers = [before, *during, *after]
    outcome.check(answers)
    assert outcome.exit_codes == [0, 0]
    for answer in answers:
        if answer.status != 202:
            _refusal(answer, (503,), "Broker Unavailable")
    in_outage = [a for a in during if a.sent + a.took <= restored]
    assert any(a.status == 503 for a in in_outage), [str(a) for a in during]
    if fault == "blackhole":
        # The broker took nothing and said nothing: the first tasks were committed, then
        # their publish ran out of time. They are accepted (the outbox sends them later);
        # from then on the gateway knows, and refuses new tasks at once.
        deferred = [a for a in in_outage if a.status == 202]
        assert deferred, [str(a) for a in during]
        known = min(a.sent + a.took for a in deferred)
        later = [a for a in in_outage if a.sent > known]
        assert later and {a.status for a in later} == {503}, [str(a) for a in later]
        assert max(a.took for a in later) < 1.0, [str(a) for a in later]


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
async def test_a_database_outage_at_the_gateway_is_a_5xx_and_loses_no_promised_task(
    system: System, fault: Fault
) -> None:
    """Issue 12, seen 2: with PostgreSQL away, tasks said to stay queued stayed pending for
    ever, reads hung or were plain-text 500s, /readyz hung, and nothing was logged."""
    effects_file = system.tmp / "worker.effects"
    async with fault_proxy("postgres", *_upstream(system.pg.url, 5432)) as database:
        api = await _start(
            system,
            effects_file,
            MAS_DATABASE_URL=database.url(system.pg.url),
            MAS_DATABASE_TIMEOUT=str(DATABASE_TIMEOUT),
            MAS_API__WRITE_TIMEOUT=str(WRITE_TIMEOUT),
        )
        async with system.client() as client:
            before = await _submit(client)
            assert before.status == 202, str(before)
            done = await client.get(f"/tasks/{before.task_id}", params={"wait": 30})
            assert done.json()["status"] == "succeeded", done.text
            _break(database, fault)
            # A readiness probe first: it meets a connection the pool kept from before.
            ready = await _request(client, "GET", "/readyz")
            reads: dict[str, Answer] = {}

            async def read(path: str) -> None:
                reads[path] = await _request(client, "GET", path)

            async with anyio.create_task_group() as group:
                for path in (f"/tasks/{before.task_id}", "/tasks/", "/agents/"):
                    group.start_soon(read, path)
                during = await _submit_for(client, OUTAGE)
            database.restore()
            after = await _until_accepted(client)
        outcome = await _outcome(system, effects_file)  # stopping needs the proxy too
    outcome.check([before, *during, *after])
    # The first submissions waited for a commit that could not happen: their 503 said the
    # task stays queued, and it did succeed (checked above with every accepted task).
    assert [a for a in during if a.status != 202 and a.task_id], [str(a) for a in during]
    for answer in [*during, *after]:
        if answer.status != 202:
            _refusal(answer, (503, 504))
    assert (ready.status, ready.retry_after) == (503, "1"), str(ready)
    assert ready.took < 1.0, str(ready)
    for path, answer in reads.items():
        _refusal(answer, (503, 504))
        assert answer.took < DATABASE_TIMEOUT + 1, f"GET {path}: {answer}"
    assert outcome.exit_codes == [0, 0], str(api)
    outage_lines = [
        event["event"]
        for event in api.logs()
        if event.get("event") in ("database_unavailable", "database_recovered")
    ]
    assert outage_lines == ["database_unavailable", "database_recovered"], api.logs()
