"""The agent the chaos soak's workers host (`mas worker --agents tests.soak.soak_agent:SoakAgent`).

Its handler has an external side effect: one row per handling in an effects table that mas
knows nothing about (`SOAK_EFFECTS_TABLE`, reached directly at `SOAK_EFFECTS_DSN`, never
through the fault proxies), so the soak's checker sees every time a message was handled,
including handlings that mas never recorded because the process died first. The effect sits
between two halves of simulated I/O (`payload.work` seconds in all): a kill can land before
it, inside the window between it and mas's record, or after.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from mas import Agent, HandlerResult, Message, TaskResult

__all__ = ["EFFECTS_COLUMNS", "SoakAgent", "effects_table_sql"]

TYPE = "soak"
STATEMENT_TIMEOUT = 10.0  # seconds; the effects database is not under test, but bound it anyway

EFFECTS_COLUMNS = ("message_id", "task_id", "node", "agent_id", "pid", "at")


def effects_table_sql(table: str) -> str:
    """DDL of the effects table (`table` already quoted and schema-qualified)."""
    return (
        f"CREATE TABLE {table} (id bigserial PRIMARY KEY, message_id text NOT NULL, "
        "task_id text, node text NOT NULL, agent_id text NOT NULL, pid integer NOT NULL, "
        "at double precision NOT NULL)"
    )


class SoakAgent(Agent):
    """Works `payload.work` seconds, records its effect halfway, returns `{"seq": ...}`."""

    type = TYPE

    async def start(self) -> None:
        self._connection: asyncpg.Connection | None = None
        self._node = os.environ.get("MAS_NODE_ID", "")
        self._table = os.environ["SOAK_EFFECTS_TABLE"]
        self._dsn = os.environ["SOAK_EFFECTS_DSN"]

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close(timeout=STATEMENT_TIMEOUT)
            self._connection = None

    async def handle_message(self, message: Message) -> HandlerResult:
        half = float(message.payload.get("work", 0)) / 2
        await asyncio.sleep(half)
        await self._record_effect(message)
        await asyncio.sleep(half)
        if message.task_id is None:
            return None
        return TaskResult.succeeded(message.task_id, {"seq": message.payload.get("seq")})

    async def _record_effect(self, message: Message) -> None:
        """One row for this handling; a failure raises, so mas retries the message."""
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._dsn, timeout=STATEMENT_TIMEOUT)
        await self._connection.execute(
            f"INSERT INTO {self._table} ({', '.join(EFFECTS_COLUMNS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            message.id,
            message.task_id,
            self._node,
            self.id,
            os.getpid(),
            time.time(),
            timeout=STATEMENT_TIMEOUT,
        )
