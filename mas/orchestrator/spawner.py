"""Spawners: how `POST /agents/` starts an agent on some worker that hosts its type.

Every worker runs one spawner agent per agent class it hosts, of type
`mas.spawner.<type>`. The gateway asks `type:mas.spawner.<type>`, so exactly one of those
workers (competing consumers) starts the agent and answers with where it runs. No worker
hosting the type means no queue, and the ask fails at once with `UnknownAgent`.
"""

from __future__ import annotations

from mas.actors.agent import Agent, HandlerResult
from mas.errors import DuplicateAgent, MasError
from mas.messages import Message

__all__ = ["SPAWN", "spawner_for", "spawner_type"]

SPAWN = "mas.spawn"


def spawner_type(agent_type: str) -> str:
    """The agent type of the spawners of `agent_type`."""
    return f"mas.spawner.{agent_type}"


def spawner_for(cls: type[Agent]) -> type[Agent]:
    """A spawner agent class that starts agents of `cls` on its node."""

    class Spawner(Agent):
        type = spawner_type(cls.type)

        async def handle_message(self, message: Message) -> HandlerResult:
            if message.type != SPAWN:
                return message.reply({"error": f"a spawner only takes {SPAWN!r} messages"})
            agent_id = message.payload.get("id")
            if not isinstance(agent_id, str):
                return message.reply({"error": "invalid", "detail": "the id must be a string"})
            runtime = self.ctx.runtime
            try:
                ref = await runtime.spawn(cls, id=agent_id)
            except DuplicateAgent:
                return message.reply({"error": "duplicate", "id": agent_id})
            except MasError as exc:
                # A start that fails is the caller's answer, not this spawner's crash: its
                # restarts would count against the budget every agent here shares.
                return message.reply({"error": "start_failed", "detail": str(exc)})
            if runtime.journal is not None:
                await runtime.journal.flush()  # the gateway reads the registry next
            return message.reply({"id": ref.id, "node_id": runtime.node_id})

    Spawner.__qualname__ = Spawner.__name__ = f"Spawner[{cls.type}]"
    return Spawner
