"""One model's rate limit across a cluster: three `mas worker` processes drafting with the
same model (a real chat-completions server run by the test, which counts the calls) stay
within its limit in every window, through Redis, and finish all the work."""

from __future__ import annotations

import anyio
import pytest

from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import DRAFTER, System, system
from tests.unit.agents.model_server import ModelServer, model
from tests.unit.agents.test_rate_limits import most_in_a_window

__all__ = ["amqp_scope", "amqp_vhost_url", "model", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMIT, WINDOW, TASKS = 3, 1.0, 12


async def test_three_workers_stay_within_one_models_limit_and_finish(
    system: System, model: ModelServer
) -> None:
    model.script = ["A line about the sea."]
    system.env |= {
        "MAS_LLM__BASE_URL": model.url,
        "MAS_LLM__MODEL": "test-model",
        "MAS_LLM__REQUESTS_PER_WINDOW": str(LIMIT),
        "MAS_LLM__RATE_WINDOW": str(WINDOW),
        "MAS_LLM__TIMEOUT": "60",
    }
    for _ in range(3):
        system.worker(DRAFTER, instances="4")
    system.api()
    async with system.client() as client:
        ids = []
        for n in range(TASKS):
            created = await client.post(
                "/tasks/", json={"type": "drafter", "payload": {"topic": f"tide {n}"}}
            )
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        finished = []
        async with anyio.create_task_group() as tasks:

            async def wait(task_id: str) -> None:
                done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
                finished.append(done.json())

            for task_id in ids:
                tasks.start_soon(wait, task_id)
    assert [task["status"] for task in finished] == ["succeeded"] * TASKS, finished
    assert model.calls == TASKS  # none refused, none made twice
    assert most_in_a_window(model.arrivals, WINDOW) <= LIMIT
    # 12 calls at 3 a second take at least 3 windows: the limit was what paced them.
    assert max(model.arrivals) - min(model.arrivals) >= (TASKS // LIMIT - 1) * WINDOW
