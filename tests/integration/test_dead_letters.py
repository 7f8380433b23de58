"""Dead letters of real worker processes over RabbitMQ, listed and replayed at the gateway.

The worker that gave up on a message records its dead letter with the commit that settles
the delivery; the gateway, another process, lists it from the store and replays it to its
original address, where a worker handles the copy once, however often the replay is asked.
"""

from __future__ import annotations

import json
import sys

import aio_pika
import anyio
import pytest

from tests.amqp_support import amqp_scope, amqp_vhost_url, queue_depth
from tests.integration.system_support import FRAGILE, System, effects, system

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def mas_cli(system: System, *args: str, code: int = 0) -> str:
    """Run `mas ARGS` against the test's gateway; its stdout (and stderr when it fails)."""
    env = system.env | {"MAS_URL": system.url, "MAS_TOKEN": system.token}
    done = await anyio.run_process(
        [sys.executable, "-m", "mas.cli", *args], env=env, cwd=system.tmp, check=False
    )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == code, out
    return out


async def test_a_workers_dead_letter_is_listed_and_replayed_once_from_the_gateway(
    system: System,
) -> None:
    flag = system.tmp / "fragile.flag"
    flag.touch()
    done = system.tmp / "effects.txt"
    worker = system.start(
        ["worker", "--agents", FRAGILE],
        MAS_TEST_FRAGILE=str(flag),
        MAS_TEST_EFFECTS=str(done),
        MAS_RETRY__BASE_DELAY="0.05",
    )
    worker.wait_for(lambda line: "ready; SIGTERM" in line)
    node = worker.wait_for(lambda line: line.startswith("mas worker ")).split()[2].rstrip(":")
    system.api()
    async with system.client() as client:
        created = await client.post("/tasks/", json={"type": "fragile", "payload": {"n": 7}})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        ended = await client.get(f"/tasks/{task_id}", params={"wait": 60})
        assert ended.json()["status"] == "dead_lettered", ended.text

        listed = await mas_cli(system, "dead-letters", "ls", "--target", "type:fragile", "--json")
        [letter] = json.loads(listed)
        assert (letter["reason"], letter["attempts"], letter["task_id"]) == (
            "max_attempts",
            2,
            task_id,
        )
        assert letter["node_id"] == node
        assert letter["error"]["message"] == "fragile while the flag file exists"

        table = await mas_cli(system, "dead-letters", "ls")
        assert letter["id"] in table and "max_attempts" in table and "type:fragile" in table

        flag.unlink()  # the operator fixed the cause
        said = await mas_cli(system, "dead-letters", "replay", letter["id"])
        second = await client.post(f"/dead-letters/{letter['id']}/replay")
        assert second.status_code == 200, second.text
        copy_id = second.json()["replayed_as"]
        assert said.strip() == f"{letter['id']}: replayed as {copy_id}"
        rerun = await client.get(f"/tasks/{task_id}", params={"wait": 60})
        assert rerun.json()["status"] == "succeeded", rerun.text
        assert rerun.json()["result"] == {"n": 7}
        refused = await mas_cli(system, "dead-letters", "discard", letter["id"], code=1)
        assert "error: HTTP 409:" in refused and "already replayed" in refused
        unknown = await mas_cli(system, "dead-letters", "show", "nope", code=1)
        assert "error: HTTP 404: no dead letter with id 'nope'" in unknown
    assert worker.terminate() == 0
    # Two failed attempts of the original, one run of the copy: the second replay sent none.
    assert effects(done) == [letter["id"], letter["id"], copy_id]
    # The broker's dead-letter queue keeps its copy too, for tools that read it.
    connection = await aio_pika.connect(system.amqp_url)
    try:
        assert await queue_depth(connection, f"{system.prefix}agents.dead_letter") == 1
    finally:
        await connection.close()
