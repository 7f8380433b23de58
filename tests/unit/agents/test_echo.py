"""EchoAgent, the agent shipped with mas."""

from __future__ import annotations

import pytest

from agents.echo import EchoAgent
from mas import Message, TaskResult
from mas.testing import TestRuntime

pytestmark = pytest.mark.anyio


async def test_echo_replies_with_the_payload() -> None:
    async with TestRuntime() as rt:
        ref = await rt.spawn(EchoAgent, id="echo")
        reply = await ref.ask(Message("say", {"text": "hi", "n": [1, 2]}), timeout=1)
    assert reply.payload == {"text": "hi", "n": [1, 2]}
    assert reply.sender == "agent:echo"


async def test_echo_completes_the_task_a_message_belongs_to() -> None:
    results: list[TaskResult] = []

    async def record(result: TaskResult, message: Message) -> None:
        results.append(result)

    async with TestRuntime() as rt:
        rt.add_task_listener(record)
        await rt.spawn(EchoAgent, id="echo")
        await rt.tell("type:echo", Message("say", {"text": "hi"}, metadata={"task_id": "t-1"}))
        await rt.settle()
    assert results == [TaskResult.succeeded("t-1", {"text": "hi"})]
