"""A rolling upgrade on the real services: every worker and gateway replaced while tasks flow.

What Kubernetes does with deploy/k8s (maxSurge 1, maxUnavailable 0), done by hand: for each
worker, start its replacement, wait until it is ready, then SIGTERM the old one (it drains);
for each gateway, start its replacement, take the old one out of the client's rotation (the
Service's endpoints), then SIGTERM it while a request is still open on it. Meanwhile a client
submits a task every few tens of milliseconds to the gateways in rotation. Every submission
is accepted at its first attempt, every accepted task succeeds, and each task's effect
happens exactly once across all the workers, old and new.
"""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import SLOW_ECHO, System, effects, system
from tests.process_support import MasProcess

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PACE = 0.03  # seconds between submissions: the load's pace, not synchronisation
WORK = 0.3  # seconds each task's handler takes (I/O): every worker holds tasks in flight
INSTANCES = "8"  # agents per worker: 2 workers take ~50 tasks/s, above the load's ~30


class Load:
    """Submits tasks round-robin to the gateways in rotation until stopped."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.rotation: list[str] = []
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.stopped = anyio.Event()

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.system.token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            for n in itertools.count():
                if self.stopped.is_set():
                    return
                url = self.rotation[n % len(self.rotation)]
                try:
                    created = await client.post(
                        f"{url}/tasks/",
                        json={"type": "slow_echo", "payload": {"n": n, "delay": WORK}},
                    )
                except httpx.HTTPError as exc:
                    self.refused.append(f"{url}: {exc!r}")
                else:
                    if created.status_code == 202:
                        self.accepted.append(created.json()["id"])
                    else:
                        self.refused.append(f"{url}: {created.status_code} {created.text}")
                await anyio.sleep(PACE)


def _url_of(process: MasProcess) -> str:
    line = process.wait_for(lambda line: line.startswith("mas api: "))
    return line.split()[2]


async def _refuses_connections(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await client.get(f"{url}/livez")
    except httpx.ConnectError:
        return True
    return False


async def _accepted_more(load: Load, than: int) -> None:
    await eventually(lambda: len(load.accepted) > than + 10, timeout=60)


async def test_replacing_every_worker_and_gateway_loses_nothing_and_repeats_nothing(
    system: System,
) -> None:
    workers = [
        system.worker(SLOW_ECHO, effects=str(system.tmp / f"w{n}.effects"), instances=INSTANCES)
        for n in (1, 2)
    ]
    gateways = [system.api(), system.api()]
    load = Load(system)
    load.rotation = [_url_of(gateway) for gateway in gateways]
    async with anyio.create_task_group() as running:
        running.start_soon(load.run)
        await _accepted_more(load, 0)
        # The workers, one by one: the replacement is ready before the old one drains.
        for n, old in enumerate(list(workers), start=3):
            fresh = system.worker(
                SLOW_ECHO, effects=str(system.tmp / f"w{n}.effects"), instances=INSTANCES
            )
            workers.append(fresh)
            await _accepted_more(load, len(load.accepted))
            assert await anyio.to_thread.run_sync(old.terminate) == 0, str(old)
            assert _completed_while_draining(old) > 0, old.lines[-20:]
            await _accepted_more(load, len(load.accepted))
        # The gateways, one by one: out of the rotation first, then SIGTERM with a request
        # still open on it, which it answers before it exits.
        for old in list(gateways):
            fresh = system.api()
            gateways.append(fresh)
            old_url = _url_of(old)
            load.rotation = [_url_of(fresh)] + [u for u in load.rotation if u != old_url]
            slow = await _submit_to(system, old_url, delay=3.0)
            answer: dict[str, httpx.Response] = {}
            async with anyio.create_task_group() as waiting:
                sent = anyio.Event()
                waiting.start_soon(_wait_for_task, system, old_url, slow, sent, answer)
                with anyio.fail_after(30):
                    await sent.wait()
                old.process.terminate()
                await eventually(partial(_refuses_connections, old_url), timeout=30)
            assert answer["response"].status_code == 200, answer["response"].text
            assert answer["response"].json()["status"] == "succeeded"
            assert await anyio.to_thread.run_sync(old.process.wait, 60) == 0, str(old)
            await _accepted_more(load, len(load.accepted))
        load.stopped.set()

    assert load.refused == []
    assert len(load.accepted) > 100, len(load.accepted)
    async with httpx.AsyncClient(
        base_url=load.rotation[0], headers={"Authorization": f"Bearer {system.token}"}, timeout=90
    ) as client:
        for task_id in load.accepted:
            done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
            assert done.json()["status"] == "succeeded", done.text
    done_by = [effects(Path(system.tmp / f"w{n}.effects")) for n in range(1, 5)]
    handled = [task_id for each in done_by for task_id in each]
    assert sorted(handled) == sorted(set(handled)), "a task was handled twice"
    assert set(load.accepted) <= set(handled)
    assert all(done_by[:2]) and all(done_by[2:]), [len(each) for each in done_by]


async def _submit_to(system: System, url: str, delay: float) -> str:
    headers = {"Authorization": f"Bearer {system.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        created = await client.post(
            f"{url}/tasks/", json={"type": "slow_echo", "payload": {"n": -1, "delay": delay}}
        )
    assert created.status_code == 202, created.text
    task_id: str = created.json()["id"]
    return task_id


async def _wait_for_task(
    system: System,
    url: str,
    task_id: str,
    sent: anyio.Event,
    answer: dict[str, httpx.Response],
) -> None:
    """`GET /tasks/{id}?wait=30` on `url`; `sent` is set once the request is on the wire."""

    async def trace(event: str, info: object) -> None:
        if event == "http11.send_request_body.complete":
            sent.set()

    headers = {"Authorization": f"Bearer {system.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        answer["response"] = await client.get(
            f"{url}/tasks/{task_id}", params={"wait": 30}, extensions={"trace": trace}
        )


def _completed_while_draining(worker: MasProcess) -> int:
    """Tasks the worker completed after SIGTERM (it logs `draining`, then finishes them)."""
    lines = worker.lines
    [signalled] = [n for n, line in enumerate(lines) if "draining" in line]
    return sum('"event": "task_completed"' in line for line in lines[signalled:])
