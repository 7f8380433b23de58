"""Agents that `mas worker` subprocesses host in the distributed tests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mas import Agent, HandlerResult, Message, TaskResult


class SlowEcho(Agent):
    """Awaits `payload.delay` seconds (I/O), appends its effect to a file, completes the task.

    The effects file (`MAS_TEST_EFFECTS`, one per worker) shows which worker ran which
    message, even for a worker killed before it recorded anything in the database.
    """

    type = "slow_echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        await asyncio.sleep(float(message.payload.get("delay", 0)))
        effects = os.environ.get("MAS_TEST_EFFECTS")
        if effects:
            with Path(effects).open("a") as sink:  # noqa: ASYNC230 - a tiny local append
                sink.write(f"{message.id}\n")
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, dict(message.payload))
