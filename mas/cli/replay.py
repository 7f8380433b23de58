"""`mas replay --trace ID`: re-run a recorded trace in memory and diff the outputs.

The messages that entered the trace from outside (their sender is not one of the trace's
agents) are sent again, in their recorded order, to fresh instances of the same agent classes
in an in-memory test runtime. What the agents emit is compared with what they emitted when
the trace was recorded (type, sender, target and payload; ids and timestamps differ by
nature), in any order. Identical outputs exit 0; a difference prints a diff and exits 1.
Every address shape a trace can have is replayed: agent, type, capability and topic
targets, over any number of hops.

Durable steps the trace recorded (`ctx.step` results: a model's answers, a plan; the ends
of durable sleeps) are replayed from the record: a handler re-run under
replay gets them as a re-run after a crash would, so a trace of agents that called a model
replays offline and deterministically, and only what the agents do with the answers is
compared (`--rerun-steps` runs them again instead). Asks and sends are not taken from the
record: they are sent again, so the agents that answered them are replayed too.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Sequence
from typing import Annotated, Any

import anyio
import typer
from pydantic import SecretStr

from mas.actors.agent import Agent
from mas.actors.workflow import StepRecord, marked_rerun
from mas.config import Settings
from mas.errors import ConfigError, MasError
from mas.messages import Message

AgentsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--agents",
        metavar="MODULE:CLASS",
        help="agent classes as module:Class (repeat); mas.agents.echo:EchoAgent is built in",
    ),
]


def load_agent_class(spec: str) -> type[Agent]:
    """Import `module:Class` and check it is an Agent subclass."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{spec!r}: write agent classes as module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"{spec!r} is not an Agent subclass")
    return cls


def canonical(message: Message) -> str:
    target = message.target or ""
    if target.startswith("reply:"):
        target = "reply:<asker>"
    return json.dumps(
        {
            "type": message.type,
            "sender": message.sender,
            "target": target,
            "payload": message.payload,
        },
        sort_keys=True,
    )


def canonical_task(task_id: str, status: str, result: Any) -> str:
    return json.dumps({"task": task_id, "status": status, "result": result}, sort_keys=True)


REPLAYED_STEPS = ("step", "sleep")
"""The kinds of recorded steps a replay takes from the record (not asks and sends, and not
signal waits: their records hold the deadline, and the signal is the task's, not loaded)."""


async def replay_trace(
    recorded: list[Message],
    agent_types: dict[str, str],
    classes: dict[str, type[Agent]],
    recorded_tasks: Sequence[tuple[str, str, Any]] = (),
    recorded_steps: dict[tuple[str, str], list[StepRecord]] | None = None,
) -> tuple[list[str], list[str]]:
    """Re-run `recorded`; returns (expected, actual) canonical outputs (messages, tasks).

    With `recorded_steps` ((message id, handler): steps), the roots go as re-runs, so their
    handlers, and those of what they send, take those steps from the record.
    """
    from mas.testing import TestRuntime
    from mas.testing.journal import MemoryJournal

    # The trace's agents send under their own address or, replying to what was sent to
    # their type, under the type's; a reply is always an output (its asker is not here).
    agent_addresses = {f"agent:{agent_id}" for agent_id in agent_types}
    agent_addresses |= {f"type:{agent_type}" for agent_type in agent_types.values()}
    roots = [
        m
        for m in recorded
        if m.sender not in agent_addresses and not (m.target or "").startswith("reply:")
    ]
    root_ids = {m.id for m in roots}
    expected = [canonical(m) for m in recorded if m.id not in root_ids]
    expected += [canonical_task(*task) for task in recorded_tasks]
    journal = MemoryJournal()
    if recorded_steps:
        journal.steps.update({key: list(steps) for key, steps in recorded_steps.items()})
    async with TestRuntime(journal=journal, log_level="ERROR") as rt:
        for agent_id, agent_type in agent_types.items():
            await rt.spawn(classes[agent_type], id=agent_id)
        with typer.progressbar(roots, label="replaying", file=None) as progress:
            for root in progress:
                again = root.evolve(reply_to=rt.reply_address if root.reply_to else None)
                if recorded_steps:
                    again = marked_rerun(again)
                if root.target is None:
                    continue
                await rt.tell(root.target, again)
                await rt.settle()
    actual = [canonical(m) for m in journal.messages if m.id not in root_ids]
    actual += [
        canonical_task(task_id, journal.tasks[task_id], result.result)
        for task_id, result in journal.results.items()
    ]
    # Compared as multisets: a record's order is when each message was handled (a handler
    # that asks finishes after its answer), which is not the order the messages were sent.
    return sorted(expected), sorted(actual)


def replay(
    trace: Annotated[
        str, typer.Option("--trace", metavar="TRACE_ID", help="the trace id to re-run")
    ],
    agents: AgentsOption = None,
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", help="database URL (default: MAS_DATABASE_URL)"),
    ] = None,
    rerun_steps: Annotated[
        bool,
        typer.Option(
            "--rerun-steps",
            help="run the recorded ctx.step steps again (a model is called again) instead of "
            "taking their results from the record",
        ),
    ] = False,
) -> None:
    """Re-run a recorded trace into an in-memory runtime and diff the outputs."""
    settings = Settings()
    if url is not None:
        settings = settings.model_copy(update={"database_url": SecretStr(url)})
    specs = ["mas.agents.echo:EchoAgent", *(agents or [])]

    async def work() -> bool:
        from mas.persistence import open_store

        classes = {cls.type: cls for cls in map(load_agent_class, specs)}
        store = await open_store(settings)
        try:
            recorded = await store.trace(trace)
            if not recorded:
                raise ConfigError(f"no messages recorded for trace {trace!r} in {store.url}")
            agent_types = await _agent_types(store, recorded, trace)
            recorded_tasks = [
                (task.id, task.status, task.result)
                for task in await store.trace_tasks(trace)
                if task.status in ("succeeded", "failed")
            ]
            steps = (
                None
                if rerun_steps
                else await store.steps_among([m.id for m in recorded], REPLAYED_STEPS)
            )
        finally:
            await store.close()
        missing = {t for t in agent_types.values() if t not in classes}
        if missing:
            raise ConfigError(
                f"no class for agent type(s) {', '.join(sorted(missing))}: "
                "pass --agents module:Class"
            )
        typer.echo(f"trace {trace}: {len(recorded)} messages, agents {sorted(agent_types)}")
        if steps:
            count = sum(map(len, steps.values()))
            typer.echo(f"  {count} recorded steps are taken from the record (not run again)")
        expected, actual = await replay_trace(recorded, agent_types, classes, recorded_tasks, steps)
        if expected == actual:
            typer.echo(f"identical: {len(actual)} output messages match the recording")
            return True
        typer.echo(
            "\n".join(difflib.unified_diff(expected, actual, "recorded", "replayed", lineterm=""))
        )
        return False

    from mas.observability.logging import configure_logging

    configure_logging("ERROR", settings.log_format)  # stdout is the diff; errors go to stderr
    try:
        same = anyio.run(work)
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not same:
        raise typer.Exit(1)


async def _agent_types(store: Any, recorded: list[Message], trace: str) -> dict[str, str]:
    """The trace's agents (by id) and their types: those its messages name (`agent:`
    senders and targets), and those that handled its messages (a `type:` target names no
    agent)."""
    ids = {
        address[6:]
        for m in recorded
        for address in (m.sender, m.target)
        if address and address.startswith("agent:")
    }
    ids.update(await store.trace_handlers(trace))
    types: dict[str, str] = {}
    for agent_id in sorted(ids):
        record = await store.get_agent(agent_id)
        if record is None:
            raise ConfigError(f"agent {agent_id!r} of the trace is not in the agents table")
        types[agent_id] = record.type
    return types
